"""Raw values for exact drift statistics: a capped reference sample and bounded window reservoirs.

A binned sketch makes KS and Wasserstein functions of bin counts, so they differ from the same statistics on the
raw values (by the binning, up to ~1e-2 at 10 bins). A :class:`Sample` keeps the raw values themselves, so a
numeric sketch that carries one (see :class:`~kawa.monitor.sketch.NumericSketch`) gives the *exact* two-sample
statistics: :func:`ks_statistic` equals ``scipy.stats.ks_2samp(ref, live).statistic`` and :func:`wasserstein`
equals ``scipy.stats.wasserstein_distance(ref, live)`` (to float rounding).

Guarantees:

- **Bounded.** A sample holds at most ``cap`` values (16 bytes each: the value and its priority), whatever the
  number of values offered to it; below the cap it holds all of them (it is *complete*) and the statistics are
  those of the raw data.
- **Uniform and deterministic beyond the cap.** Every value offered gets a pseudo-random *priority*, a hash of its
  bits and of its position in the stream the sample has seen; the sample keeps the ``cap`` values of smallest
  priority (bottom-k sampling). So it is a uniform subsample, the same for the same values in the same order
  whatever the batching, and :meth:`Sample.merge` of two samples is the bottom-k of their union (exactly what a
  sample of both streams keeps, up to the positions that salt the hashes).
- NaN values are missing: never kept, never counted in ``seen``.

:func:`ks_null` and :func:`wasserstein_null` simulate either statistic for windows resampled from a reference
sample, vectorised over replicates: the windowed detector's exact-mode calibration
(:mod:`kawa.monitor.calibrate`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from kawa.monitor.errors import MonitorError

FloatArray = npt.NDArray[np.float64]
UIntArray = npt.NDArray[np.uint64]
IntArray = npt.NDArray[np.int64]

DEFAULT_SAMPLE_CAP = 100_000
"""Raw values a reference profile keeps per numeric feature, when asked to keep them."""
DEFAULT_WINDOW_SAMPLE_CAP = 10_000
"""Raw values a live window keeps per numeric feature (when its reference keeps a sample)."""
EVIDENTLY_NORM_FLOOR = 0.001  # Evidently 0.7 divides the Wasserstein distance by max(std(reference), 0.001)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: UIntArray) -> UIntArray:
    """splitmix64's finaliser, elementwise (uint64 arithmetic wraps, as the hash needs)."""
    z = (z + _GOLDEN).astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    out: UIntArray = z ^ (z >> np.uint64(31))
    return out


def priorities(values: FloatArray, start: int) -> UIntArray:
    """The priority of each value, the ``start + i``-th value a sample has seen."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    index = np.arange(start, start + values.size, dtype=np.uint64)
    return _mix(_mix(bits) ^ index)


@dataclass(frozen=True, eq=False)
class Sample:
    """At most ``cap`` raw values (ascending) of the ``seen`` values offered, with their priorities."""

    values: FloatArray
    priority: UIntArray
    seen: int
    cap: int

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise MonitorError(f"a sample keeps at least one value; got cap={self.cap}")

    @staticmethod
    def empty(cap: int) -> Sample:
        return Sample(np.empty(0), np.empty(0, dtype=np.uint64), 0, cap)

    @staticmethod
    def of(values: npt.ArrayLike, cap: int) -> Sample:
        """The sample of ``values`` (NaN dropped): all of them up to ``cap``, a uniform subsample beyond."""
        return Sample.empty(cap).add(values)

    @property
    def size(self) -> int:
        return int(self.values.size)

    @property
    def complete(self) -> bool:
        """Whether it holds every value it was offered (so its statistics are those of the raw data)."""
        return self.size == self.seen

    @cached_property
    def area(self) -> FloatArray:
        """The :func:`running_area` of the values (for :func:`wasserstein`), computed on first use."""
        return running_area(self.values)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.priority.nbytes)

    def add(self, values: npt.ArrayLike) -> Sample:
        """This sample with ``values`` offered to it (a new sample; this one is unchanged)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        if x.size == 0:
            return self
        return _keep(
            np.concatenate([self.values, x]),
            np.concatenate([self.priority, priorities(x, self.seen)]),
            self.seen + int(x.size),
            self.cap,
        )

    def merge(self, other: Sample) -> Sample:
        """The bottom-``cap`` of both samples (the cap of this one)."""
        return _keep(
            np.concatenate([self.values, other.values]),
            np.concatenate([self.priority, other.priority]),
            self.seen + other.seen,
            self.cap,
        )

    def __eq__(self, other: object) -> bool:
        """Equal values (bit for bit, in order), ``seen`` and ``cap``; the priorities are bookkeeping."""
        return (
            isinstance(other, Sample)
            and (self.seen, self.cap) == (other.seen, other.cap)
            and self.values.tobytes() == other.values.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside: not hashable

    def to_dict(self) -> dict[str, Any]:
        """The values as little-endian float64 in base64 (exact and compact), with ``seen`` and ``cap``."""
        raw = self.values.astype("<f8").tobytes()
        return {"values_f8": base64.b64encode(raw).decode("ascii"), "seen": self.seen, "cap": self.cap}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Sample:
        values = np.frombuffer(base64.b64decode(d["values_f8"]), dtype="<f8").astype(np.float64)
        if values.size > int(d["cap"]) or not np.all(values[1:] >= values[:-1]):
            raise MonitorError("a stored sample must hold at most cap values, in ascending order; re-create it")
        # The stream positions that salted the priorities are gone; re-salting by rank keeps merges bottom-k.
        return Sample(values, priorities(values, 0), int(d["seen"]), int(d["cap"]))


def _keep(values: FloatArray, prio: UIntArray, seen: int, cap: int) -> Sample:
    if values.size > cap:
        chosen = np.argpartition(prio, cap - 1)[:cap]
        values, prio = values[chosen], prio[chosen]
    order = np.argsort(values, kind="stable")
    v, p = values[order], prio[order]
    v.flags.writeable = False
    p.flags.writeable = False
    return Sample(v, p, seen, cap)


def ks_statistic(ref: FloatArray, live: FloatArray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic of two ascending arrays: ``scipy.stats.ks_2samp``'s."""
    if ref.size == 0 or live.size == 0:
        return 0.0
    # Between two live values F_live is constant and F_ref monotone, so the largest gap is at a live value's
    # right limit (the last of its ties) or left limit (the first): O(live * log(ref)), not O(ref + live).
    m = live.size
    k = np.arange(1, m + 1, dtype=np.float64) / m
    last = np.ones(m, dtype=bool)
    last[:-1] = live[:-1] != live[1:]
    first = np.ones(m, dtype=bool)
    first[1:] = live[1:] != live[:-1]
    up = np.abs(np.searchsorted(ref, live[last], side="right") / ref.size - k[last])
    down = np.abs(np.searchsorted(ref, live[first], side="left") / ref.size - (k[first] - 1 / m))
    return float(max(up.max(), down.max()))


def running_area(ref: FloatArray) -> FloatArray:
    """``A[i]``, the integral of ``F_ref`` from ``ref[0]`` to ``ref[i]`` (``F_ref = (i + 1) / n`` on
    ``[ref[i], ref[i + 1])``): what :func:`wasserstein` needs of the reference, computed once per sample."""
    n = ref.size
    return np.concatenate([[0.0], np.cumsum(np.arange(1, n, dtype=np.float64) / n * np.diff(ref))])


def wasserstein(ref: FloatArray, live: FloatArray, area: FloatArray | None = None) -> float:
    """The 1-Wasserstein distance between the empirical distributions of two ascending arrays, the integral of
    ``|F_ref - F_live|``: ``scipy.stats.wasserstein_distance``'s. O(live * log(ref)) given the reference's
    :func:`running_area` (``area``; computed when not given)."""
    if ref.size == 0 or live.size == 0:
        return 0.0
    a_ref = running_area(ref) if area is None else area
    n, m = ref.size, live.size

    def integral(t: FloatArray) -> FloatArray:  # of F_ref from -inf (it is 0 below ref[0]) to t
        i = np.searchsorted(ref, t, side="right") - 1
        j = np.maximum(i, 0)
        out: FloatArray = np.where(i >= 0, a_ref[j] + (j + 1) / n * (t - ref[j]), 0.0)
        return out

    at = integral(live)
    ks = np.arange(1, m, dtype=np.int64)
    g = ks / m
    x_a, x_b, a_a, a_b = live[:-1], live[1:], at[:-1], at[1:]
    # On [x_a, x_b) F_live = g; F_ref < g below c, its first point at or above g, and >= g from c on.
    c = ref[np.maximum((ks * n + m - 1) // m - 1, 0)]
    mid = np.clip(c, x_a, x_b)
    inner = (a_b - a_a - g * (x_b - x_a)) + 2 * (g * (mid - x_a) - (integral(mid) - a_a))
    top = max(float(ref[-1]), float(live[-1]))
    tail = (top - live[-1]) - (float(integral(np.array([top]))[0]) - at[-1])  # above the last: F_live = 1
    return float(at[0] + inner.sum() + tail)


def evidently_norm(ref: FloatArray, scale: float) -> float:
    """What Evidently 0.7 divides the Wasserstein distance by: the reference standard deviation (population,
    ``scale``; 0 when the reference sample is constant) floored at 0.001."""
    constant = ref.size == 0 or ref[0] == ref[-1]
    return max(0.0 if constant else scale, EVIDENTLY_NORM_FLOOR)


def _draws(n: int, m: int, rows: int, rng: np.random.Generator) -> IntArray:
    idx: IntArray = np.sort(rng.integers(0, n, size=(rows, m)), axis=1)
    return idx


def ks_null(ref: FloatArray, m: int, replicates: int, rng: np.random.Generator, chunk: int = 20_000) -> FloatArray:
    """The KS statistic between ``ref`` (ascending) and ``replicates`` windows of ``m`` values drawn from it with
    replacement, O(m) per window: the CDF gap is largest at a window value's left or right limit."""
    n = ref.size
    right = np.searchsorted(ref, ref, side="right").astype(np.float64) / n
    left = np.searchsorted(ref, ref, side="left").astype(np.float64) / n
    k = np.arange(1, m + 1, dtype=np.float64) / m
    out = np.empty(replicates)
    for lo in range(0, replicates, chunk):
        idx = _draws(n, m, min(chunk, replicates - lo), rng)
        group = right[idx]  # equal for tied values: identifies each distinct value
        last = np.ones(idx.shape, dtype=bool)
        last[:, :-1] = group[:, :-1] != group[:, 1:]
        first = np.ones(idx.shape, dtype=bool)
        first[:, 1:] = group[:, 1:] != group[:, :-1]
        up = np.where(last, np.abs(group - k), 0.0)  # just at a value: F_ref = right, F_live = k/m (last of ties)
        down = np.where(first, np.abs(left[idx] - (k - 1 / m)), 0.0)  # just below it
        out[lo : lo + idx.shape[0]] = np.maximum(up.max(axis=1), down.max(axis=1))
    return out


def wasserstein_null(
    ref: FloatArray, m: int, replicates: int, rng: np.random.Generator, chunk: int = 20_000
) -> FloatArray:
    """The 1-Wasserstein distance between ``ref`` (ascending) and ``replicates`` windows of ``m`` values drawn from
    it with replacement, O(m) per window: with ``A`` the running integral of ``F_ref``, the integral of
    ``|F_ref - k/m|`` between consecutive window values is a few differences of ``A``."""
    n = ref.size
    area = running_area(ref)
    out = np.empty(replicates)
    ks = np.arange(1, m, dtype=np.int64)
    # First index where F_ref reaches k/m: F_ref = (i + 1) / n on [ref[i], ref[i + 1]).
    cross = np.maximum((ks * n + m - 1) // m - 1, 0)
    g = ks / m
    for lo in range(0, replicates, chunk):
        idx = _draws(n, m, min(chunk, replicates - lo), rng)
        a, b = idx[:, :-1], idx[:, 1:]
        x_a, x_b = ref[a], ref[b]
        total = area[b] - area[a] - g * (x_b - x_a)  # the integral of F_ref - g over [a, b)
        mid = np.clip(cross, a, b)  # below it F_ref < g
        total += 2 * (g * (ref[mid] - x_a) - (area[mid] - area[a]))
        head = area[idx[:, 0]]  # below the first window value: F_live = 0
        tail = (ref[-1] - ref[idx[:, -1]]) - (area[-1] - area[idx[:, -1]])  # above the last: F_live = 1
        out[lo : lo + idx.shape[0]] = head + total.sum(axis=1) + tail
    return out
