"""The monitoring events on the alerts topic, and a model's status read back from them.

:class:`~kawa.monitor.service.MonitorService` writes four typed CloudEvents on ``kawa.monitor.alerts`` (key: the
model, so one model's events stay in order on one partition), data as compact JSON:

- ``kawa.monitor.alert``: drift begun, with its evidence (statistic, threshold, window, reference version,
  features, sample sizes); ``detector`` is ``window`` (the calibrated windowed tests) or ``sequential`` (the
  per-record CUSUMs). Its id is derived from what raised it, so the same alert recomputed after a restart has
  the same id and is not written twice.
- ``kawa.monitor.resolved``: the condition cleared; ``alert_id`` names the alert it ends.
- ``kawa.monitor.window``: the drift table (PSI, JS, KS, normed Wasserstein, chi-square, missing share, per
  feature and for the score) of each tested window.
- ``kawa.monitor.performance``: a matured cohort's metrics with intervals, and the label-free (CBPE) estimate
  of the decisions whose outcomes have not matured yet, flagged ``assumes_no_concept_drift``.

:func:`status` folds them into a :class:`ModelStatus` per version (pure); :func:`read_events` reads the topic.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from kawa.monitor import cbpe
from kawa.monitor.alerts import Alert
from kawa.monitor.drift import compare
from kawa.monitor.errors import MonitorError
from kawa.monitor.join import Matured
from kawa.monitor.performance import Interval
from kawa.monitor.sequential import SequentialAlert
from kawa.monitor.sketch import NumericSketch

if TYPE_CHECKING:
    from kawa.events.cloudevents import CloudEvent
    from kawa.log.base import EventLog

__all__ = [
    "ALERTS_TOPIC",
    "ALERT_EVENT",
    "PERFORMANCE_EVENT",
    "RESOLVED_EVENT",
    "WINDOW_EVENT",
    "ModelStatus",
    "MonitorEvent",
    "VersionStatus",
    "event_id",
    "monitor_event",
    "read_events",
    "status",
]

ALERTS_TOPIC = "kawa.monitor.alerts"
ALERT_EVENT = "kawa.monitor.alert"
RESOLVED_EVENT = "kawa.monitor.resolved"
WINDOW_EVENT = "kawa.monitor.window"
PERFORMANCE_EVENT = "kawa.monitor.performance"
EVENT_TYPES = (ALERT_EVENT, RESOLVED_EVENT, WINDOW_EVENT, PERFORMANCE_EVENT)
SOURCE = "kawa://monitor"

_NAMESPACE = uuid.UUID("0c9f3e8e-55a1-4c39-9d7b-7c2f4f1b6a21")


def event_id(*parts: object) -> str:
    """A deterministic event id for what ``parts`` name (model, version, detector, window ...)."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(repr(p) for p in parts)))


def finite(value: Any) -> Any:
    """``value`` ready for strict JSON: non-finite floats become None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


@dataclass(frozen=True)
class MonitorEvent:
    """One event of the alerts topic: its type, id, model, version and data."""

    type: str
    id: str
    model: str
    version: int
    data: Mapping[str, Any]
    time: float = 0.0

    def to_cloudevent(self) -> CloudEvent:
        from kawa.events.cloudevents import new_event

        body = json.dumps(finite(dict(self.data)), separators=(",", ":"), allow_nan=False).encode()
        return new_event(
            self.type, SOURCE, body, id=self.id, subject=f"{self.model}/{self.version}",
            time=datetime.fromtimestamp(self.time or time.time(), UTC), datacontenttype="application/json",
            extensions={"partitionkey": self.model},
        )  # fmt: skip


def monitor_event(type_: str, id: str, model: str, version: int, data: Mapping[str, Any], at: float) -> MonitorEvent:
    if type_ not in EVENT_TYPES:
        raise MonitorError(f"unknown monitoring event type {type_}; one of {', '.join(EVENT_TYPES)}")
    return MonitorEvent(type_, id, model, version, {"model": model, "version": version, **data}, at)


def from_record(record: Any) -> MonitorEvent | None:
    """The monitoring event a log record holds (binary mode, JSON data); None for any other record."""
    kind = record.header("ce_type")
    if kind is None or kind.decode(errors="replace") not in EVENT_TYPES or not record.value:
        return None
    try:
        data = json.loads(record.value)
        stamp = (record.header("ce_time") or b"").decode()
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0
        return MonitorEvent(
            kind.decode(), (record.header("ce_id") or b"").decode(), str(data["model"]), int(data["version"]), data, at
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_events(log: EventLog, topic: str = ALERTS_TOPIC, *, timeout_s: float = 30.0) -> list[MonitorEvent]:
    """Every monitoring event of ``topic`` from its start to its end as of the call, in log order per partition
    (an empty list when the topic does not exist yet)."""
    from kawa.errors import TopicNotFound
    from kawa.log.base import TopicPartition

    try:
        info = log.describe_topic(topic)
    except TopicNotFound:
        return []
    ends = {TopicPartition(topic, p.partition): p.end_offset for p in info.partitions if p.end_offset > 0}
    if not ends:
        return []
    consumer = log.consumer(f"kawa-monitor-reader-{uuid.uuid4().hex[:12]}", [topic])
    out: list[MonitorEvent] = []
    deadline = time.monotonic() + timeout_s
    try:
        while any(tp not in consumer.assignment() or consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise MonitorError(f"could not read {topic!r} to its end within {timeout_s:g} s; is the log reachable?")
            for record in consumer.poll(timeout=0.2, max_records=1000):
                tp = TopicPartition(record.topic, record.partition)
                if record.offset < ends.get(tp, 0):
                    found = from_record(record)
                    if found is not None:
                        out.append(found)
    finally:
        consumer.close()
    return out


@dataclass
class VersionStatus:
    """What the alerts topic says about one model version."""

    version: int
    open_alerts: dict[str, MonitorEvent] = field(default_factory=dict)
    alerts: list[MonitorEvent] = field(default_factory=list)
    resolved: int = 0
    last_window: MonitorEvent | None = None
    performance: MonitorEvent | None = None

    def to_dict(self, history: int = 10) -> dict[str, Any]:
        return {
            "version": self.version,
            "open_alerts": [_brief(e) for e in self.open_alerts.values()],
            "latest_alerts": [_brief(e) for e in self.alerts[-history:]],
            "alerts": len(self.alerts),
            "resolved": self.resolved,
            "last_window": dict(self.last_window.data) if self.last_window else None,
            "performance": dict(self.performance.data) if self.performance else None,
        }


@dataclass
class ModelStatus:
    model: str
    versions: dict[int, VersionStatus] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "versions": [v.to_dict() for _, v in sorted(self.versions.items())]}


def status(events: Iterable[MonitorEvent], model: str) -> ModelStatus:
    """Fold the monitoring events of ``model`` (in log order) into its status per version: open alerts (raised and
    not yet resolved), the alert history, the last window's drift table and the latest performance."""
    out = ModelStatus(model)
    for e in events:
        if e.model != model:
            continue
        v = out.versions.setdefault(e.version, VersionStatus(e.version))
        if e.type == ALERT_EVENT:
            v.alerts.append(e)
            v.open_alerts[e.id] = e
        elif e.type == RESOLVED_EVENT:
            if v.open_alerts.pop(str(e.data.get("alert_id")), None) is not None:
                v.resolved += 1
        elif e.type == WINDOW_EVENT:
            v.last_window = e
        elif e.type == PERFORMANCE_EVENT:
            v.performance = e
    return out


def _brief(e: MonitorEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "detector": e.data.get("detector"),
        "features": e.data.get("features"),
        "window": e.data.get("window"),
        "time": e.time,
    }


def window_alert_data(alert: Alert, arl0: float, window_size: int) -> dict[str, Any]:
    """The data of a windowed detector's alert: the window, the tests that alarmed and their evidence."""
    return {
        "detector": "window",
        "reference_version": alert.reference_version,
        "window": {"start": alert.window_start, "end": alert.window_end},
        "features": list(alert.features),
        "correction": alert.correction,
        "false_alarm_level": alert.false_alarm_level,
        "arl0": arl0,
        "window_size": window_size,
        "evidence": [
            {
                "feature": f.feature,
                "test": f.test,
                "statistic": f.statistic,
                "value": f.value,
                "effect": f.effect,
                "min_effect": f.min_effect,
                "threshold": f.threshold,
                "p_value": f.p_value,
                "n_reference": f.n_reference,
                "n_live": f.n_live,
            }
            for f in alert.findings
        ],
    }


def sequential_alert_data(e: SequentialAlert) -> dict[str, Any]:
    """The data of a CUSUM alert: the records from the estimated change point to the alarm, and the evidence."""
    return {
        "detector": "sequential",
        "reference_version": e.reference_version,
        "window": {"start": None, "end": e.time, "first_record": e.change_point + 1, "last_record": e.record},
        "features": [e.feature],
        "arl0": e.arl0,
        "evidence": [
            {
                "feature": e.feature,
                "test": "distribution",
                "statistic": f"cusum_{e.channel}",
                "direction": e.direction,
                "value": e.value,
                "threshold": e.threshold,
                "shift": e.shift,
                "delay": e.delay,
                "n_reference": e.n_reference,
                "n_live": e.delay,
            }
        ],
    }


def interval_data(i: Interval) -> dict[str, float]:
    return {"estimate": i.estimate, "low": i.low, "high": i.high, "level": i.level}


def drift_row(ref: Any, cur: Any) -> dict[str, Any]:
    """One feature's row of a window's drift table, as the monitor publishes it (KS and Wasserstein exact, on raw
    values, when both sketches keep a sample: ``exact`` says which)."""
    fd = compare(ref, cur)
    return {
        "kind": "numeric" if isinstance(ref, NumericSketch) else "categorical",
        "psi": fd.psi, "js": fd.js, "ks": fd.ks, "ks_p": fd.ks_p, "normed_wasserstein": fd.normed_wasserstein,
        "chi2": fd.chi2, "chi2_p": fd.chi2_p, "cramers_v": fd.cramers_v,
        "missing_share": fd.missing.live_share, "reference_missing_share": fd.missing.reference_share,
        "unseen_share": fd.unseen.share if fd.unseen is not None else None,
        "n_reference": fd.n_reference, "n_live": fd.n_live, "counts": list(cur.counts), "missing": cur.missing,
        "exact": fd.exact,
    }  # fmt: skip


def check_data(matured: list[Matured], threshold: float) -> dict[str, Any] | None:
    """What the label-free estimate of a matured cohort said, against the labels it got (None: too few scores)."""
    pairs = [(m.decision.score, m.label) for m in matured if m.decision.score is not None and m.label is not None]
    scores = np.array([s for s, _ in pairs], dtype=np.float64)
    if scores.size < 2 or scores.min() < 0 or scores.max() > 1:
        return None
    labels = np.array([y for _, y in pairs])
    result = cbpe.check(cbpe.estimate(scores, threshold=threshold), labels, scores)
    return {"estimated_auroc": result.estimated_auroc, "realised_auroc": result.realised_auroc, "gap": result.gap,
            "within_band": result.within_band, "flagged": result.flagged}  # fmt: skip
