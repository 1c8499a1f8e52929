"""The monitoring service: decision records in, typed alerts and performance out.

:class:`Monitor` is the pure core (no clock, no log): fed decision records of one model, it keeps per version
sliding event-time windows of the feature snapshot and the score, binned with that version's reference profile;
it runs the sequential detector (per-feature CUSUMs) on every batch and the calibrated windowed tests (PSI/JS/KS/
chi-square, missing and unseen shares, corrected together) on every closed window, and gives back the
:class:`~kawa.monitor.status.MonitorEvent` s to write. Fed the join's matured decisions, it computes matured-cohort
performance per version and arm with intervals, a label-free (CBPE) estimate of the decisions still waiting for
their outcome, and the check of that estimate against the labels once they mature.

:class:`MonitorService` is the one I/O piece: it reads the ``decisions`` topic from its start (so a restart replays
it and rebuilds the same state), optionally steps an :class:`~kawa.monitor.outcomes.OutcomeJoiner`, and writes
the events on ``kawa.monitor.alerts``. Event ids are derived from what raised them, and the service skips ids
already on the alerts topic, so a restarted (or second) service writes no alert twice. Alerts are deduplicated
while their condition persists by the detectors themselves (one open alert per version for the windowed tests,
one per feature for the CUSUMs) and resolved when it clears.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kawa.monitor import cbpe
from kawa.monitor.alerts import Alert, Resolved
from kawa.monitor.calibrate import SCORE, Correction, DetectorState, DriftDetector, Statistic, calibrate
from kawa.monitor.errors import MonitorError
from kawa.monitor.join import Advance, JoinConfig, Matured
from kawa.monitor.performance import cohorts
from kawa.monitor.records import DecisionRecord, decode
from kawa.monitor.sample import DEFAULT_WINDOW_SAMPLE_CAP
from kawa.monitor.sequential import (
    Mode,
    SequentialAlert,
    SequentialDetector,
    SequentialResolved,
    SequentialState,
    calibrate_sequential,
)
from kawa.monitor.sketch import NumericSketch, Profile
from kawa.monitor.status import (
    ALERT_EVENT,
    ALERTS_TOPIC,
    PERFORMANCE_EVENT,
    RESOLVED_EVENT,
    WINDOW_EVENT,
    MonitorEvent,
    check_data,
    drift_row,
    event_id,
    interval_data,
    monitor_event,
    read_events,
    sequential_alert_data,
    window_alert_data,
)
from kawa.monitor.windows import Window, Windows, WindowState

if TYPE_CHECKING:
    from kawa.log.base import Consumer, EventLog, Producer
    from kawa.monitor.outcomes import OutcomeJoiner

__all__ = ["Monitor", "MonitorConfig", "MonitorService", "ProfileSource"]

log = logging.getLogger("kawa.monitor.service")

ProfileSource = Callable[[int], Profile | None]
"""The reference profile of a model version (None: it has none, its decisions are counted and not tested)."""


@dataclass(frozen=True)
class MonitorConfig:
    """What one model's monitor does. Windows: ``panes`` panes of ``pane_s`` seconds, sliding by one pane, closed
    when the latest decision time read passes their end by ``lateness_s``; a window with fewer than
    ``window_size`` records is not tested. ``window_arl0``: expected stationary windows between false alarms of the
    windowed tests; ``sequential_arl0``: expected stationary records between false alarms of the CUSUMs (None: no
    sequential detector), tuned to a shift of ``shift`` reference standard deviations. ``join``: join outcomes
    and publish performance per cohort of ``cohort_s`` seconds (None: no outcomes). ``window_sample_cap``: raw
    values each window keeps per numeric feature when the version's profile keeps a sample (the exact mode: KS
    and Wasserstein on raw values); at least ``window_size`` then."""

    model: str
    pane_s: float = 300.0
    panes: int = 4
    lateness_s: float = 0.0
    window_size: int = 500
    window_arl0: float = 1000.0
    statistic: Statistic = "psi"
    correction: Correction = "by"
    clear_after: int = 1
    sequential_arl0: float | None = 1_000_000.0
    shift: float = 0.5
    sequential_mode: Mode = "binned"
    seed: int = 0
    decisions_topic: str = "decisions"
    outcomes_topic: str = "outcomes"
    alerts_topic: str = ALERTS_TOPIC
    join: JoinConfig | None = None
    cohort_s: float = 86_400.0
    threshold: float = 0.5
    k: int = 100
    bootstrap: int = 200
    window_sample_cap: int = DEFAULT_WINDOW_SAMPLE_CAP

    def __post_init__(self) -> None:
        if not self.model:
            raise MonitorError("a monitor watches one model: give its name")
        if self.window_size < 1 or self.panes < 1 or not self.pane_s > 0:
            raise MonitorError("window_size and panes are positive counts, pane_s a positive number of seconds")
        if self.window_sample_cap < 1:
            raise MonitorError(f"window_sample_cap is a positive number of values, got {self.window_sample_cap}")


@dataclass
class _Track:
    """One model version's windows and detectors (mutable; only :class:`Monitor` changes it)."""

    version: int
    reference: Profile
    windows: Windows
    detector: DriftDetector
    sequential: SequentialDetector | None
    wstate: WindowState = field(default_factory=WindowState)
    dstate: DetectorState = field(default_factory=DetectorState)
    sstate: SequentialState = field(default_factory=SequentialState)
    pending: dict[str, float] = field(default_factory=dict)  # decision key -> score, outcome not matured yet
    alert_ids: dict[str, str] = field(default_factory=dict)  # open sequential alert per feature -> its event id
    window_alert: str | None = None


class Monitor:
    """The pure core of one model's monitoring (see the module docstring). ``profiles`` gives each version's
    reference profile; it is asked once per version."""

    def __init__(self, config: MonitorConfig, profiles: ProfileSource) -> None:
        self.config = config
        self.profiles = profiles
        self.tracks: dict[int, _Track | None] = {}
        self.unprofiled: dict[int, int] = {}
        self.records = 0
        self.latest = -math.inf
        self.matured: dict[tuple[int, str, int], list[Matured]] = {}  # (version, arm, bucket) -> matured
        self.touched: set[tuple[int, str, int]] = set()
        self.join_watermark = -math.inf

    @property
    def reference_version(self) -> Callable[[int], str]:
        return lambda version: f"{self.config.model}/{version}"

    def track(self, version: int) -> _Track | None:
        if version not in self.tracks:
            profile = self.profiles(version)
            self.tracks[version] = None if profile is None else self._build(version, profile)
        return self.tracks[version]

    def _build(self, version: int, profile: Profile) -> _Track:
        c = self.config
        ref = self.reference_version(version)
        sampled = [n for n, s in profile.features.items() if isinstance(s, NumericSketch) and s.sample is not None]
        if sampled and c.window_sample_cap < c.window_size:
            raise MonitorError(
                f"{c.model} version {version}'s profile keeps raw values, so windows are tested on them: set "
                f"window_sample_cap ({c.window_sample_cap}) to at least window_size ({c.window_size})"
            )
        detector = _calibrated(profile, c, ref)
        numeric = [n for n, s in profile.features.items() if isinstance(s, NumericSketch) and s.observed > 0]
        sequential = None
        if c.sequential_arl0 is not None and numeric:
            sequential = calibrate_sequential(
                profile, arl0=c.sequential_arl0, shift=c.shift, mode=c.sequential_mode, features=numeric,
                reference_version=ref,
            )  # fmt: skip
        windows = Windows(profile, pane=c.pane_s, panes=c.panes, lateness=c.lateness_s, sample_cap=c.window_sample_cap)
        return _Track(version, profile, windows, detector, sequential)

    def add(self, decisions: Sequence[DecisionRecord]) -> list[MonitorEvent]:
        """Count a batch of decision records (in log order) into their versions' windows and CUSUMs, close the
        windows the latest decision time passed, and return the events raised."""
        by_version: dict[int, list[DecisionRecord]] = {}
        for d in decisions:
            if d.model == self.config.model:
                by_version.setdefault(d.version, []).append(d)
                self.latest = max(self.latest, d.decided_at)
        events: list[MonitorEvent] = []
        for version, batch in sorted(by_version.items()):
            self.records += len(batch)
            track = self.track(version)
            if track is None:
                self.unprofiled[version] = self.unprofiled.get(version, 0) + len(batch)
                continue
            events += self._add(track, batch)
        watermark = self.latest - self.config.lateness_s
        for track in self.tracks.values():
            if track is not None:
                events += self._advance(track, watermark)
        return events

    def _add(self, track: _Track, batch: list[DecisionRecord]) -> list[MonitorEvent]:
        times = [d.decided_at for d in batch]
        feats = [d.features for d in batch]
        numeric = [n for n, sketch in track.reference.features.items() if isinstance(sketch, NumericSketch)]
        columns: dict[str, Any] = dict(zip(numeric, _matrix(feats, numeric).T, strict=True))
        for name in track.reference.features:
            if name not in columns:
                columns[name] = [f.get(name) for f in feats]
        scores: Any = np.array([_number(d.score) for d in batch])
        track.wstate = track.windows.add(track.wstate, times, columns, scores)
        if self.config.join is not None:  # the label-free gap estimate is published with the join's performance
            wait = self.config.join.wait
            for d in batch:
                # A decision the join has already matured (on a restart the join rebuilds before the decisions
                # are replayed) is not waiting for its outcome.
                if d.score is not None and 0.0 <= d.score <= 1.0 and d.decided_at + wait > self.join_watermark:
                    track.pending[d.key] = d.score
        if track.sequential is None:
            return []
        matrix = {f: columns[f] for f in track.sequential.features}
        track.sstate, found = track.sequential.step(track.sstate, matrix, times)
        return [self._sequential_event(track, e) for e in found]

    def _advance(self, track: _Track, watermark: float) -> list[MonitorEvent]:
        track.wstate, closed = track.windows.advance(track.wstate, watermark)
        events: list[MonitorEvent] = []
        for window in closed:
            track.dstate, found = track.detector.step(track.dstate, window)
            if window.profile.n >= self.config.window_size:
                events.append(self._window_event(track, window))
            if isinstance(found, Alert):
                events.append(self._window_alert(track, found))
            elif isinstance(found, Resolved) and track.window_alert is not None:
                events.append(self._resolved(track, track.window_alert, "window", found.alert.features,
                                             found.window_start, found.window_end, found.window_end))  # fmt: skip
                track.window_alert = None
        return events

    def _window_event(self, track: _Track, window: Window) -> MonitorEvent:
        ref, live = track.reference, window.profile
        targets = [*ref.features.items(), *([(SCORE, ref.score)] if ref.score is not None else [])]
        table: dict[str, Any] = {}
        for name, sketch in targets:
            cur = live.score if name == SCORE else live.features[name]
            assert cur is not None
            table[name] = drift_row(sketch, cur)
        data = {"window": {"start": window.start, "end": window.end}, "n": live.n, "drift": table,
                "reference_version": self.reference_version(track.version)}  # fmt: skip
        eid = event_id(self.config.model, track.version, "window", window.start, window.end)
        return monitor_event(WINDOW_EVENT, eid, self.config.model, track.version, data, window.end)

    def _window_alert(self, track: _Track, alert: Alert) -> MonitorEvent:
        data = window_alert_data(alert, track.detector.arl0, track.detector.window_size)
        eid = event_id(self.config.model, track.version, "window-alert", alert.window_start, alert.window_end)
        track.window_alert = eid
        return monitor_event(ALERT_EVENT, eid, self.config.model, track.version, data, alert.window_end)

    def _sequential_event(self, track: _Track, e: SequentialAlert | SequentialResolved) -> MonitorEvent:
        if isinstance(e, SequentialResolved):
            eid = track.alert_ids.pop(e.alert.feature, "")
            window = (e.alert.time, e.time)
            return self._resolved(track, eid, "sequential", (e.alert.feature,), *window, e.time)
        eid = event_id(self.config.model, track.version, "sequential-alert", e.feature, e.record)
        track.alert_ids[e.feature] = eid
        data = sequential_alert_data(e)
        return monitor_event(ALERT_EVENT, eid, self.config.model, track.version, data, e.time)

    def _resolved(
        self, track: _Track, alert_id: str, detector: str, features: Sequence[str], start: float, end: float, at: float
    ) -> MonitorEvent:
        data = {"alert_id": alert_id, "detector": detector, "features": list(features),
                "window": {"start": start, "end": end}}  # fmt: skip
        eid = event_id(alert_id, "resolved")
        return monitor_event(RESOLVED_EVENT, eid, self.config.model, track.version, data, at)

    # --- outcomes ----------------------------------------------------------------------------------------------

    def on_advance(self, step: Advance) -> None:
        """Take a join step's matured decisions of this model (also called for replayed steps)."""
        self.join_watermark = max(self.join_watermark, step.watermark)
        for m in step.matured:
            d = m.decision
            if d.model != self.config.model:
                continue
            track = self.tracks.get(d.version)
            if track is not None:
                track.pending.pop(d.key, None)
            key = (d.version, d.arm or "", math.floor(d.decided_at / self.config.cohort_s))
            self.matured.setdefault(key, []).append(m)
            self.touched.add(key)
        for d in step.expired:
            track = self.tracks.get(d.version) if d.model == self.config.model else None
            if track is not None:
                track.pending.pop(d.key, None)

    def performance(self) -> list[MonitorEvent]:
        """One ``kawa.monitor.performance`` event per cohort that changed since the last call: its metrics and
        intervals, the check of the label-free estimate against its labels, and the label-free estimate of the
        version's decisions still waiting for their outcome."""
        c = self.config
        events = []
        for key in sorted(self.touched):
            version = key[0]
            for perf in cohorts(self.matured[key], bucket=c.cohort_s, threshold=c.threshold, k=c.k,
                                bootstrap=c.bootstrap):  # fmt: skip
                m = perf.metrics
                data: dict[str, Any] = {
                    "cohort": {"start": perf.start, "end": perf.end, "arm": perf.arm},
                    "n": m.n, "positives": m.positives, "assumed_negative": perf.assumed_negative,
                    "threshold": m.threshold, "k": m.k, "ece": m.ece,
                    "metrics": {name: interval_data(getattr(m, name)) for name in
                                ("auroc", "auprc", "precision_at_k", "sensitivity", "ppv", "brier")},
                }  # fmt: skip
                data["label_free_check"] = check_data(self.matured[key], c.threshold)
                data["label_free"] = self._gap_estimate(version)
                eid = event_id(c.model, version, "performance", perf.arm, perf.start, m.n, m.positives)
                events.append(monitor_event(PERFORMANCE_EVENT, eid, c.model, version, data, perf.end))
        self.touched.clear()
        return events

    def _gap_estimate(self, version: int) -> dict[str, Any] | None:
        track = self.tracks.get(version)
        if track is None or not track.pending:
            return None
        est = cbpe.estimate(np.fromiter(track.pending.values(), dtype=np.float64), threshold=self.config.threshold)
        return {"n": est.n, "auroc": est.auroc, "auroc_band": list(est.auroc_band), "sensitivity": est.sensitivity,
                "ppv": est.ppv, "brier": est.brier,
                "assumes_no_concept_drift": est.assumes_no_concept_drift}  # fmt: skip


_CALIBRATED: dict[tuple[str, ...], DriftDetector] = {}
_CACHE_SIZE = 16


def _calibrated(profile: Profile, c: MonitorConfig, ref: str) -> DriftDetector:
    """The windowed detector for ``profile``: calibration is a seeded bootstrap (a second or more), so a service
    restarted in the same process (``kawa up``, tests) reuses the identical result instead of redoing it."""
    key = (hashlib.sha256(profile.to_json().encode()).hexdigest(), ref,
           repr((c.window_size, c.window_arl0, c.statistic, c.correction, c.seed, c.clear_after)))  # fmt: skip
    if key not in _CALIBRATED:
        if len(_CALIBRATED) >= _CACHE_SIZE:
            _CALIBRATED.pop(next(iter(_CALIBRATED)))
        _CALIBRATED[key] = calibrate(
            profile, window_size=c.window_size, arl0=c.window_arl0, numeric=c.statistic, correction=c.correction,
            seed=c.seed, reference_version=ref, clear_after=c.clear_after,
        )  # fmt: skip
    return _CALIBRATED[key]


def _matrix(feats: list[Mapping[str, Any]], names: list[str]) -> npt.NDArray[np.float64]:
    """Records x ``names`` as floats, missing values (and, on the slow path, non-numbers) as NaN."""
    rows = [[f.get(n) for n in names] for f in feats]
    try:
        return np.array(rows, dtype=np.float64).reshape(len(feats), len(names))  # numpy reads None as NaN
    except (TypeError, ValueError):
        return np.array([[_number(v) for v in row] for row in rows], dtype=np.float64).reshape(len(feats), len(names))


def _number(value: Any) -> float:
    return math.nan if value is None or isinstance(value, str) else float(value)


class MonitorService:
    """Monitors one model on a log: :meth:`start`, then :meth:`step` (read what is there, process, emit) or
    :meth:`run` until a stop event. Holds no state the log cannot rebuild: it reads the decisions topic from its
    start, and the outcome joiner rebuilds from its checkpoint topic."""

    def __init__(self, log: EventLog, config: MonitorConfig, profiles: ProfileSource, *,
                 read_timeout_s: float = 30.0) -> None:  # fmt: skip
        self.log = log
        self.config = config
        self.core = Monitor(config, profiles)
        self.read_timeout_s = read_timeout_s
        self.seen: set[str] = set()
        self.emitted = 0
        self.invalid = 0
        self.joiner: OutcomeJoiner | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    def start(self) -> MonitorService:
        """Create the topics it needs, learn which events are already written, open the decisions reader and
        rebuild the join."""
        from kawa.log.base import TopicSpec

        c = self.config
        for topic in (c.decisions_topic, c.alerts_topic, *((c.outcomes_topic,) if c.join else ())):
            self.log.create_topic(TopicSpec(topic, 1, retention_ms=None), exist_ok=True)
        self.seen = {e.id for e in read_events(self.log, c.alerts_topic, timeout_s=self.read_timeout_s)}
        group = f"kawa-monitor-{uuid.uuid4().hex[:12]}"  # private and never committed: every start replays
        self._consumer = self.log.consumer(group, [c.decisions_topic])
        self._producer = self.log.producer()
        if c.join is not None:
            from kawa.monitor.outcomes import OutcomeJoiner

            self.joiner = OutcomeJoiner(
                self.log, c.join, decisions=c.decisions_topic, outcomes=c.outcomes_topic,
                checkpoints=f"kawa.monitor.join.{c.model}", accept=lambda d: d.model == c.model,
                on_advance=self.core.on_advance, read_timeout_s=self.read_timeout_s,
            ).start()  # fmt: skip
        return self

    def step(self) -> list[MonitorEvent]:
        """Read the decisions written since the last step, process them, step the join, and write the new events;
        returns the events written (none twice, across restarts too)."""
        if self._consumer is None or self._producer is None:
            raise MonitorError("start() the monitor service before stepping it")
        events: list[MonitorEvent] = []
        for batch in self._batches():
            events += self.core.add(batch)
        if self.joiner is not None:
            self.joiner.step()
            events += self.core.performance()
        written = []
        for event in events:
            if event.id in self.seen:
                continue
            from kawa.events.cloudevents import to_kafka

            key, value, headers = to_kafka(event.to_cloudevent())
            self._producer.produce(self.config.alerts_topic, value, key=key, headers=headers)
            self.seen.add(event.id)
            written.append(event)
        self._producer.flush()
        self.emitted += len(written)
        return written

    def run(self, stop: threading.Event, *, interval_s: float = 1.0,
            on_events: Callable[[list[MonitorEvent]], None] | None = None) -> None:  # fmt: skip
        """Step until ``stop`` is set, waiting ``interval_s`` between steps."""
        while not stop.is_set():
            written = self.step()
            if on_events is not None and written:
                on_events(written)
            stop.wait(interval_s)

    def close(self) -> None:
        if self.joiner is not None:
            self.joiner.close()
            self.joiner = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    def _batches(self) -> Iterator[list[DecisionRecord]]:
        """The decision records of this model on the decisions topic up to its end as of the call, in batches
        of one poll each, in log order."""
        from kawa.errors import EventError
        from kawa.log.base import TopicPartition

        assert self._consumer is not None
        topic = self.config.decisions_topic
        info = self.log.describe_topic(topic)
        ends = {TopicPartition(topic, p.partition): p.end_offset for p in info.partitions if p.end_offset > 0}
        deadline = time.monotonic() + self.read_timeout_s
        consumer = self._consumer
        while any(tp not in consumer.assignment() or consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise MonitorError(f"the monitor could not read {topic!r} within {self.read_timeout_s:g} s; is the "
                                   "log reachable?")  # fmt: skip
            batch: list[DecisionRecord] = []
            for record in consumer.poll(timeout=0.2, max_records=5000):
                try:
                    item = decode(record)
                except EventError:
                    self.invalid += 1
                    continue
                if isinstance(item, DecisionRecord) and item.model == self.config.model:
                    batch.append(item)
            if batch:
                yield batch
