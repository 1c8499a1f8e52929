"""A sequential (record-by-record) drift detector: per-feature two-sided CUSUMs with a declared false-alarm budget.

Where the windowed :class:`~kawa.monitor.calibrate.DriftDetector` waits for a window to close, this one updates a
statistic with every record, so a shift is seen as soon as its evidence suffices. Each *channel* turns a feature's
value into a score ``s`` with mean 0 and variance 1 under the reference and runs two one-sided CUSUMs on it,
``S+ = max(0, S+ + s - k)`` (upward) and ``S- = max(0, S- - s - k)`` (downward); a channel alarms when either
exceeds its threshold ``h``. ``k`` is half the shift to detect, in reference standard deviations.

- **mode "mean"**: one channel per feature, ``s = (x - mean) / sd`` with the reference profile's mean and standard
  deviation. Thresholds assume normal scores (Siegmund's approximation, see :mod:`kawa.monitor.cusum`); for a
  skewed or heavy-tailed feature use the binned mode.
- **mode "binned"**: two channels per feature on the reference's quantile bins. ``location`` scores a record by its
  bin's standardised position (a mean shift); ``spread`` by the standardised square of it (a change of scale or of
  the tails, which leaves the mean alone). Each bin's score is a constant, so the score's null distribution is
  the reference's bin probabilities whatever the feature's distribution, and each channel's threshold is computed
  from that distribution (its drift exponent, in the same approximation), not from a normal model.
- **Budget.** ``arl0`` is the expected number of stationary *records* between false alarms over all features
  together. Each of the ``2m`` one-sided CUSUMs gets a run length of ``2m * arl0`` (Bonferroni on the false-alarm
  rate: the rates add up to at most ``1 / arl0``).
- **Alerts.** A channel's crossing raises a :class:`SequentialAlert` for its feature (with the statistic, the
  threshold, the estimated change point and shift) unless the feature's alert is open; the crossed CUSUM restarts
  at 0. Another crossing keeps the alert open (deduplicated); ``clear_after`` records without one resolve it
  (:class:`SequentialResolved`). Missing values (NaN) leave the statistics unchanged.

Memory is O(channels) whatever the stream length. :meth:`SequentialDetector.step` is pure and vectorised over the
records of a batch; how a stream is cut into batches does not change when it alarms (property-tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import numpy.typing as npt

from kawa.monitor import cusum
from kawa.monitor.errors import MonitorError
from kawa.monitor.sketch import NumericSketch, Profile

Mode = Literal["mean", "binned"]
Channel = Literal["mean", "location", "spread"]
FloatArray = npt.NDArray[np.float64]

_BLOCK = 2048  # rows per closed-form block: keeps the cumulative sum's rounding far below any threshold


@dataclass(frozen=True)
class SequentialAlert:
    """Drift begun on one feature: the channel and direction that crossed, the CUSUM value and its threshold, the
    record count at the alarm (``record``; the stream's first record is 1), the estimated change point (the
    alarm CUSUM last stood at 0 after this many records) and the estimated shift of the score, in reference standard
    deviations, since then. ``time`` is the alarming record's event time when the batch carried times."""

    feature: str
    channel: Channel
    direction: Literal["up", "down"]
    value: float
    threshold: float
    record: int
    change_point: int
    shift: float
    time: float
    reference_version: str
    arl0: float
    n_reference: int

    @property
    def delay(self) -> int:
        """Records from the estimated change point to the alarm."""
        return self.record - self.change_point


@dataclass(frozen=True)
class SequentialResolved:
    """Drift cleared on the alert's feature: ``record`` is the record after which ``clear_after`` records passed
    with no crossing."""

    alert: SequentialAlert
    record: int
    time: float


SequentialEvent = SequentialAlert | SequentialResolved


@dataclass(frozen=True)
class SequentialState:
    """The CUSUMs (upward channels then downward ones), where each last stood at 0, the open alerts by feature, the
    record of each feature's last crossing, and the counts of records and crossings. ``SequentialState()`` starts a
    stream."""

    records: int = 0
    cusums: tuple[float, ...] = ()
    zeros: tuple[int, ...] = ()
    open: Mapping[str, SequentialAlert] | None = None
    last_crossing: Mapping[str, int] | None = None
    crossings: int = 0


@dataclass(frozen=True)
class SequentialDetector:
    """Calibrated per-feature CUSUMs (frozen config; build it with :func:`calibrate_sequential`). Channel ``c`` reads
    column ``channel_feature[c]`` of a batch; ``k`` is per channel, ``h`` per one-sided CUSUM (every channel's
    upward one, then every channel's downward one); ``tables`` (binned mode) are each
    channel's score per reference bin, with ``edges`` the bins' cut points per feature."""

    features: tuple[str, ...]
    mode: Mode
    shift: float
    arl0: float
    channel_feature: tuple[int, ...]
    channel_kind: tuple[Channel, ...]
    k: tuple[float, ...]
    h: tuple[float, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    edges: tuple[tuple[float, ...], ...] = ()
    tables: tuple[tuple[float, ...], ...] = ()
    clear_after: int = 1000
    reference_version: str = ""
    n_reference: int = 0

    @cached_property
    def _arrays(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, list[FloatArray], list[FloatArray]]:
        """The config as numpy arrays, built once (the dataclass fields stay hashable tuples)."""
        k = np.asarray(self.k, dtype=np.float64)
        return (
            np.asarray(self.center, dtype=np.float64),
            np.asarray(self.scale, dtype=np.float64),
            np.concatenate([k, k]),
            np.asarray(self.h, dtype=np.float64),
            [np.asarray(e, dtype=np.float64) for e in self.edges],
            [np.asarray(t, dtype=np.float64) for t in self.tables],
        )

    def scores(self, values: FloatArray) -> FloatArray:
        """Each channel's score for a block of records (records x features); NaN where the value is missing."""
        center, scale, _, _, edges, tables = self._arrays
        if self.mode == "mean":
            mean_z: FloatArray = (values - center) / scale
            return mean_z
        z = np.empty((values.shape[0], len(self.channel_feature)))
        bins: dict[int, npt.NDArray[np.intp]] = {}
        for c, f in enumerate(self.channel_feature):
            if f not in bins:  # the channels of one feature share its bins
                bins[f] = np.searchsorted(edges[f], values[:, f], side="right")
            z[:, c] = tables[c][bins[f]]
        z[np.isnan(values[:, list(self.channel_feature)])] = np.nan
        return z

    def step(
        self,
        state: SequentialState,
        batch: npt.ArrayLike | Mapping[str, npt.ArrayLike],
        times: npt.ArrayLike | None = None,
    ) -> tuple[SequentialState, tuple[SequentialEvent, ...]]:
        """Feed a batch of records (an array of records x ``features``, or one column per feature name), in order;
        returns the new state and the alerts and resolutions it raised, in record order."""
        values = self._matrix(batch)
        n = values.shape[0]
        t = None if times is None else np.asarray(times, dtype=np.float64)
        if t is not None and t.shape != (n,):
            raise MonitorError(f"times must give one event time per record ({n}), got shape {t.shape}")
        channels = len(self.channel_feature)
        start = np.asarray(state.cusums, dtype=np.float64) if state.cusums else np.zeros(2 * channels)
        zeros = np.asarray(state.zeros, dtype=np.int64) if state.zeros else np.zeros(2 * channels, dtype=np.int64)
        run = _Run(self, dict(state.open or {}), dict(state.last_crossing or {}), state.crossings, t, state.records)
        _, _, k, h, _, _ = self._arrays
        for lo in range(0, n, _BLOCK):
            z = self.scores(values[lo : lo + _BLOCK])
            inc = np.concatenate([z - k[:channels], -z - k[channels:]], axis=1)
            missing = np.isnan(inc)
            if missing.any():
                inc[missing] = 0.0  # a missing value is no evidence: the CUSUM stays where it was
            start, zeros = run.block(inc, start, zeros, h, state.records + lo)
        run.resolve_until(state.records + n)
        new = SequentialState(
            records=state.records + n,
            cusums=tuple(float(v) for v in start),
            zeros=tuple(int(v) for v in zeros),
            open=run.open,
            last_crossing=run.last,
            crossings=run.crossings,
        )
        return new, tuple(run.events)

    def _matrix(self, batch: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> FloatArray:
        if isinstance(batch, Mapping):
            missing = [f for f in self.features if f not in batch]
            if missing:
                raise MonitorError(f"the batch lacks features {missing}; send a column for every monitored feature")
            return np.column_stack([np.asarray(batch[f], dtype=np.float64) for f in self.features])
        values = np.asarray(batch, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.features):
            raise MonitorError(
                f"a batch is records x {len(self.features)} features ({', '.join(self.features)}), got {values.shape}"
            )
        return values


class _Run:
    """The mutable scratch of one :meth:`SequentialDetector.step` call (never escapes it)."""

    def __init__(
        self,
        det: SequentialDetector,
        open_: dict[str, SequentialAlert],
        last: dict[str, int],
        crossings: int,
        times: FloatArray | None,
        first: int,
    ) -> None:
        self.det, self.open, self.last, self.crossings = det, open_, last, crossings
        self.times, self.first = times, first
        self.events: list[SequentialEvent] = []

    def time(self, record: int) -> float:
        return math.nan if self.times is None else float(self.times[record - 1 - self.first])

    def block(
        self, inc: FloatArray, start: FloatArray, zeros: npt.NDArray[np.int64], h: FloatArray, pos: int
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Run one block of increments from ``start`` and handle its crossings in record order. A crossed CUSUM
        restarts at 0, so only its own column is recomputed from there, and only as far as its next crossing
        (looking ahead 64 rows, then 4 times more each time): a persistent shift, which crosses every few records,
        costs a few rows per crossing."""
        m = inc.shape[0]
        s = cusum.cusum_paths(inc, start)
        first = _first_over(s, h, 0, m)
        segment = np.zeros(inc.shape[1], dtype=np.int64)  # row where each column last restarted in this block
        while True:
            r = int(first.min())
            if r >= m:
                break
            crossed = np.flatnonzero(first == r)
            points = []
            for c in crossed:  # the change point: where this CUSUM last stood at 0
                at0 = np.flatnonzero(s[segment[c] : r + 1, c] == 0)
                points.append(pos + int(segment[c] + at0[-1]) + 1 if at0.size else int(zeros[c]))
            self.cross(pos + r + 1, crossed, s[r, crossed].copy(), points, h)
            s[r, crossed] = 0.0
            segment[crossed] = r
            first[crossed] = _restart(s, inc, h, crossed, r + 1)
        at0 = s == 0
        last0 = m - 1 - np.argmax(at0[::-1], axis=0)
        return s[-1].copy(), np.where(at0.any(axis=0), pos + last0 + 1, zeros)

    def cross(
        self, record: int, crossed: npt.NDArray[np.intp], values: FloatArray, points: list[int], h: FloatArray
    ) -> None:
        det = self.det
        channels = len(det.channel_feature)
        self.resolve_until(record - 1)
        best: dict[int, int] = {}  # feature -> index into crossed of its strongest crossing
        for i, c in enumerate(crossed):
            f = det.channel_feature[c % channels]
            if f not in best or values[i] / h[c] > values[best[f]] / h[crossed[best[f]]]:
                best[f] = i
        for f, i in sorted(best.items()):
            self.crossings += 1
            name = det.features[f]
            self.last[name] = record
            if name in self.open:
                continue
            c = int(crossed[i])
            up = c < channels
            cp = points[i]
            k = det.k[c % channels]
            size = (float(values[i]) / max(record - cp, 1) + k) * (1 if up else -1)
            alert = SequentialAlert(
                name, det.channel_kind[c % channels], "up" if up else "down", float(values[i]), float(h[c]), record,
                cp, size, self.time(record), det.reference_version, det.arl0, det.n_reference,
            )  # fmt: skip
            self.open[name] = alert
            self.events.append(alert)

    def resolve_until(self, record: int) -> None:
        """Resolve, in record order, every open alert whose ``clear_after`` quiet records end at or before
        ``record``."""
        due = sorted((self.last[name] + self.det.clear_after, name) for name in self.open)
        for at, name in due:
            if at > record:
                break
            self.events.append(SequentialResolved(self.open.pop(name), at, self.time(at)))


def _restart(
    s: FloatArray, inc: FloatArray, h: FloatArray, cols: npt.NDArray[np.intp], lo: int
) -> npt.NDArray[np.int64]:
    """Recompute columns ``cols`` of the block's CUSUMs ``s`` from 0 at row ``lo``, each up to its next crossing
    (rows past it are recomputed when that crossing restarts it); the rows of those crossings."""
    m = s.shape[0]
    first = np.full(cols.size, m, dtype=np.int64)
    pending = np.arange(cols.size)
    start = np.zeros(cols.size)
    step = 64
    while pending.size and lo < m:
        hi = min(m, lo + step)
        c = cols[pending]
        seg = cusum.cusum_paths(inc[lo:hi, c], start)
        s[lo:hi, c] = seg
        over = seg > h[c]
        hit = over.any(axis=0)
        first[pending[hit]] = lo + over[:, hit].argmax(axis=0)
        start, pending = seg[-1, ~hit], pending[~hit]
        lo, step = hi, step * 4
    return first


def _first_over(s: FloatArray, h: FloatArray, lo: int, m: int) -> npt.NDArray[np.int64]:
    """Per column, the first row at or after ``lo`` where ``s`` exceeds ``h`` (``m`` where none does)."""
    if lo >= m:
        return np.full(s.shape[1], m, dtype=np.int64)
    over = s[lo:] > h
    found: npt.NDArray[np.int64] = np.where(over.any(axis=0), lo + over.argmax(axis=0), m)
    return found


def calibrate_sequential(
    profile: Profile,
    *,
    arl0: float,
    shift: float = 0.5,
    mode: Mode = "mean",
    features: Sequence[str] | None = None,
    clear_after: int | None = None,
    reference_version: str = "",
) -> SequentialDetector:
    """CUSUMs for the profile's numeric features (or ``features``) tuned to a shift of ``shift`` reference
    standard deviations, with one false alarm per ``arl0`` stationary records over all of them on average.
    ``clear_after`` (records with no crossing before an alert resolves) defaults to four times the records the
    CUSUM needs to reach its threshold at the tuned shift."""
    if not arl0 > 1:
        raise MonitorError(f"the false-alarm budget ARL0 must be more than 1 record, got {arl0}")
    if not (shift > 0 and math.isfinite(shift)):
        raise MonitorError(f"the shift to detect must be a positive number of standard deviations, got {shift}")
    if mode not in ("mean", "binned"):
        raise MonitorError(f"unknown sequential mode {mode}; choose mean or binned")
    names = list(features) if features is not None else [
        n for n, s in profile.features.items() if isinstance(s, NumericSketch)
    ]  # fmt: skip
    if not names:
        raise MonitorError("the profile has no numeric features to monitor; name them with features=")
    sketches: list[NumericSketch] = []
    for name in names:
        sketch = profile.features.get(name)
        if not isinstance(sketch, NumericSketch):
            raise MonitorError(f"{name} is not a numeric feature of the profile; the sequential detector needs numbers")
        if sketch.observed == 0:
            raise MonitorError(f"feature {name} has no reference values; it cannot be calibrated")
        sketches.append(sketch)
    k = shift / 2
    per_channel = 2 if mode == "binned" else 1
    target = 2 * per_channel * len(names) * arl0  # Bonferroni: each one-sided CUSUM's run length
    center = tuple(_mean(s) for s in sketches)
    scale = tuple(s.scale for s in sketches)
    cf: list[int] = []
    kinds: list[Channel] = []
    hs: list[float] = []  # upward CUSUMs' thresholds
    down: list[float] = []  # downward ones'
    tables: list[tuple[float, ...]] = []
    for f, sketch in enumerate(sketches):
        if mode == "mean":
            cf.append(f)
            kinds.append("mean")
            hs.append(cusum.threshold(target, k, 2 * k))
            down.append(hs[-1])
            continue
        p = np.asarray(sketch.counts, dtype=np.float64) / sketch.observed
        loc = (np.asarray(sketch.positions) - center[f]) / scale[f]
        pairs: tuple[tuple[Channel, FloatArray], ...] = (
            ("location", _standardise(loc, p)),
            ("spread", _standardise(loc**2, p)),
        )
        for kind, table in pairs:
            cf.append(f)
            kinds.append(kind)
            tables.append(tuple(float(v) for v in table))
            if not np.any(table):  # a degenerate score (e.g. two equal bins have no spread): never alarms
                hs.append(math.inf)
                down.append(math.inf)
                continue
            hs.append(cusum.threshold(target, k, cusum.drift_exponent(table, p, k)))
            down.append(cusum.threshold(target, k, cusum.drift_exponent(-table, p, k)))
    finite = [v for v in hs + down if math.isfinite(v)]
    quiet = clear_after if clear_after is not None else math.ceil(4 * max(finite, default=1.0) / k)
    if quiet < 1:
        raise MonitorError(f"clear_after must be at least 1 record, got {quiet}")
    return SequentialDetector(
        features=tuple(names),
        mode=mode,
        shift=shift,
        arl0=float(arl0),
        channel_feature=tuple(cf),
        channel_kind=tuple(kinds),
        k=(k,) * len(cf),
        h=tuple(hs + down),
        center=center,
        scale=scale,
        edges=tuple(s.edges for s in sketches) if mode == "binned" else (),
        tables=tuple(tables),
        clear_after=quiet,
        reference_version=reference_version,
        n_reference=profile.n,
    )


def _mean(sketch: NumericSketch) -> float:
    """The reference mean: each bin's position is the mean of its reference values, so this is exact."""
    return float(np.dot(sketch.counts, sketch.positions) / sketch.observed)


def _standardise(values: FloatArray, p: FloatArray) -> FloatArray:
    """``values`` per bin shifted and scaled to mean 0 and variance 1 under bin probabilities ``p`` (all zero when
    constant)."""
    m = float(p @ values)
    sd = math.sqrt(float(p @ (values - m) ** 2))
    out: FloatArray = (values - m) / sd if sd > 1e-12 else np.zeros_like(values)
    return out
