"""Performance on matured cohorts: discrimination, operating-point and calibration metrics with intervals.

Pure functions on arrays of labels (0/1) and scores (numpy, scipy for ranks and normal quantiles), and
:func:`cohorts`, which groups matured decisions (:class:`kawa.monitor.join.Matured`) by prediction-time bucket,
model version and experiment arm.

============================  =====================================================================================
metric                        definition (interval)
============================  =====================================================================================
AUROC                         Mann-Whitney with mid-ranks for ties (DeLong's variance, fast form of Sun & Xu 2014;
                              Wald interval clipped to [0, 1])
AUPRC                         average precision ``Σ (R_n - R_{n-1}) P_n`` over the distinct score thresholds
                              (sklearn's ``average_precision_score``; no interpolation; percentile bootstrap,
                              seeded)
precision@k                   share of positives among the ``k`` highest scores, ties at the k-th broken by record
                              order (Wilson)
sensitivity, PPV              at the operating threshold, positive when ``score >= threshold`` (Wilson)
Brier                         mean squared error of the score as a probability (Wald interval)
ECE                           ``Σ_b (n_b / N) |ȳ_b - p̄_b|`` over ``bins`` equal-width bins of [0, 1]
============================  =====================================================================================

Undefined values (AUROC of a cohort with one class, PPV with no positive call) are NaN, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from kawa.monitor.errors import MonitorError
from kawa.monitor.join import Matured

__all__ = [
    "CohortPerformance",
    "Interval",
    "Metrics",
    "at_threshold",
    "auprc",
    "auroc",
    "bootstrap_auprc",
    "brier",
    "cohorts",
    "delong",
    "ece",
    "evaluate",
    "precision_at_k",
    "wilson",
]

_NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """An estimate and its two-sided interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def _nan_interval(level: float) -> Interval:
    return Interval(_NAN, _NAN, _NAN, level)


def _arrays(y: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    labels = np.asarray(y)
    scores = np.asarray(s, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise MonitorError(
            f"labels and scores must be two 1-d arrays of one length, got {labels.shape}, {scores.shape}"
        )
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise MonitorError("labels must be 0 or 1; map other outcomes to a binary label first")
    if not np.isfinite(scores).all():
        raise MonitorError("scores must be finite numbers; drop decisions without a score first")
    return labels.astype(np.int64), scores


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise MonitorError(f"a confidence level is in (0, 1), got {level}")
    return float(stats.norm.ppf(0.5 + level / 2))


def wilson(k: int, n: int, level: float = 0.95) -> Interval:
    """The share ``k / n`` with its Wilson score interval (NaN when ``n == 0``)."""
    if n == 0:
        return _nan_interval(level)
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def auroc(y: ArrayLike, s: ArrayLike) -> float:
    """The area under the ROC curve (ties count one half); NaN unless both classes are present."""
    return delong(y, s).estimate


def delong(y: ArrayLike, s: ArrayLike, level: float = 0.95) -> Interval:
    """AUROC with DeLong's interval: the variance from the structural components ``V10`` (per positive: the
    share of negatives it outranks) and ``V01`` (per negative), computed from mid-ranks in O(n log n)."""
    labels, scores = _arrays(y, s)
    z = _z(level)
    pos, neg = scores[labels == 1], scores[labels == 0]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return _nan_interval(level)
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    rx, ry = stats.rankdata(pos), stats.rankdata(neg)
    v10 = (ranks[:m] - rx) / n
    v01 = 1.0 - (ranks[m:] - ry) / m
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    half = z * math.sqrt(var)
    return Interval(auc, max(0.0, auc - half), min(1.0, auc + half), level)


def auprc(y: ArrayLike, s: ArrayLike) -> float:
    """Average precision (the step-wise area under the precision-recall curve); NaN without positives."""
    labels, scores = _arrays(y, s)
    if labels.sum() == 0:
        return _NAN
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]  # the last record of each distinct score
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def bootstrap_auprc(y: ArrayLike, s: ArrayLike, *, draws: int = 200, level: float = 0.95, seed: int = 0) -> Interval:
    """AUPRC with a percentile bootstrap interval (``draws`` resamples of the cohort, seeded so a dashboard
    shows the same interval twice). Resamples without a positive are dropped. Ties are handled exactly as
    :func:`auprc` does (equal scores are one threshold)."""
    labels, scores = _arrays(y, s)
    estimate = auprc(labels, scores)
    n = labels.size
    if math.isnan(estimate) or draws < 1:
        return Interval(estimate, _NAN, _NAN, level)
    rng = np.random.default_rng(seed)
    # A resample is a count per record. Records are sorted by score once; in that order each resample's AP is
    # Σ_g ΔTP_g · TP_g / ALL_g / P over the groups g of equal scores (cumulative weighted counts at group
    # ends), so no resample is sorted: O(draws · n).
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], labels[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(ordered)), n - 1]
    values: list[NDArray[np.float64]] = []
    rows = max(1, 2_000_000 // n)  # bound the memory of one chunk of resamples
    for start in range(0, draws, rows):
        chunk = min(rows, draws - start)
        idx = rng.integers(0, n, (chunk, n))
        flat = (idx + (np.arange(chunk) * n)[:, None]).ravel()
        counts = np.bincount(flat, minlength=chunk * n).reshape(chunk, n)[:, order].astype(np.float64)
        tp = np.cumsum(counts * hits, axis=1)[:, ends]
        everything = np.cumsum(counts, axis=1)[:, ends]
        gain = np.diff(tp, axis=1, prepend=0.0)
        precision = np.divide(tp, everything, out=np.zeros_like(tp), where=everything > 0)
        positives = tp[:, -1]
        ok = positives > 0
        values.append((gain * precision).sum(axis=1)[ok] / positives[ok])
    sample = np.concatenate(values)
    if sample.size == 0:
        return Interval(estimate, _NAN, _NAN, level)
    low, high = np.quantile(sample, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(estimate, float(low), float(high), level)


def precision_at_k(y: ArrayLike, s: ArrayLike, k: int, level: float = 0.95) -> Interval:
    """The share of positives among the ``k`` highest-scored records (all of them when fewer), Wilson."""
    labels, scores = _arrays(y, s)
    if k < 1:
        raise MonitorError(f"precision@k needs k >= 1, got {k}")
    top = np.argsort(-scores, kind="stable")[:k]
    return wilson(int(labels[top].sum()), int(top.size), level)


def at_threshold(y: ArrayLike, s: ArrayLike, threshold: float, level: float = 0.95) -> tuple[Interval, Interval]:
    """Sensitivity (recall) and PPV (precision) when ``score >= threshold`` is a positive call, Wilson."""
    labels, scores = _arrays(y, s)
    called = scores >= threshold
    tp = int((called & (labels == 1)).sum())
    return wilson(tp, int(labels.sum()), level), wilson(tp, int(called.sum()), level)


def brier(y: ArrayLike, p: ArrayLike, level: float = 0.95) -> Interval:
    """The Brier score ``mean((p - y)²)`` with a Wald interval (NaN for an empty cohort)."""
    labels, probs = _arrays(y, p)
    if labels.size == 0:
        return _nan_interval(level)
    sq = (probs - labels) ** 2
    mean = float(sq.mean())
    half = _z(level) * float(sq.std(ddof=1)) / math.sqrt(sq.size) if sq.size > 1 else _NAN
    return Interval(mean, max(0.0, mean - half), mean + half, level)


def ece(y: ArrayLike, p: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins of [0, 1] (a score of 1 in the last bin)."""
    labels, probs = _arrays(y, p)
    if labels.size == 0:
        return _NAN
    if bins < 1 or probs.min() < 0 or probs.max() > 1:
        raise MonitorError("ECE needs bins >= 1 and scores that are probabilities in [0, 1]")
    index = np.minimum((probs * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, labels, bins) - np.bincount(index, probs, bins))
    return float(gap.sum() / labels.size) if count.sum() else _NAN


@dataclass(frozen=True)
class Metrics:
    """Every metric of one cohort. ``k`` is the precision@k cut actually used (at most ``n``)."""

    n: int
    positives: int
    auroc: Interval
    auprc: Interval
    precision_at_k: Interval
    k: int
    threshold: float
    sensitivity: Interval
    ppv: Interval
    brier: Interval
    ece: float


def evaluate(
    y: ArrayLike,
    s: ArrayLike,
    *,
    threshold: float = 0.5,
    k: int = 100,
    level: float = 0.95,
    bootstrap: int = 200,
    seed: int = 0,
) -> Metrics:
    """All metrics of one cohort; ``s`` must be probabilities for Brier and ECE to mean anything.
    ``bootstrap``: resamples for the AUPRC interval (0: no interval)."""
    labels, scores = _arrays(y, s)
    sens, ppv = at_threshold(labels, scores, threshold, level)
    calibrated = bool(labels.size) and scores.min() >= 0.0 and scores.max() <= 1.0
    return Metrics(
        n=int(labels.size),
        positives=int(labels.sum()),
        auroc=delong(labels, scores, level),
        auprc=bootstrap_auprc(labels, scores, draws=bootstrap, level=level, seed=seed),
        precision_at_k=precision_at_k(labels, scores, k, level) if labels.size else _nan_interval(level),
        k=min(k, int(labels.size)),
        threshold=threshold,
        sensitivity=sens,
        ppv=ppv,
        brier=brier(labels, scores, level) if calibrated else _nan_interval(level),
        ece=ece(labels, scores) if calibrated else _NAN,
    )


@dataclass(frozen=True)
class CohortPerformance:
    """The metrics of the decisions of one model version and arm made in ``[start, end)``."""

    model: str
    version: int
    arm: str | None
    start: float
    end: float
    metrics: Metrics
    assumed_negative: int


def cohorts(
    matured: Iterable[Matured],
    *,
    bucket: float,
    origin: float = 0.0,
    threshold: float = 0.5,
    k: int = 100,
    level: float = 0.95,
    bootstrap: int = 200,
) -> list[CohortPerformance]:
    """Group matured decisions by model, version, arm and prediction-time bucket (``bucket`` seconds from
    ``origin``) and compute each cohort's metrics. Decisions without a score or a binary label are left out;
    ``assumed_negative`` counts the labels that are negatives only because no outcome came."""
    if not (bucket > 0 and math.isfinite(bucket)):
        raise MonitorError(f"a cohort bucket is a positive number of seconds, got {bucket}")
    groups: dict[tuple[str, int, str, int], tuple[list[int], list[float], list[bool]]] = {}
    for m in matured:
        d = m.decision
        if d.score is None or m.label is None:
            continue
        index = math.floor((d.decided_at - origin) / bucket)
        ys, ss, seen = groups.setdefault((d.model, d.version, d.arm or "", index), ([], [], []))
        ys.append(m.label)
        ss.append(d.score)
        seen.append(m.observed)
    out = []
    for (model, version, arm, index), (ys, ss, seen) in sorted(
        groups.items(), key=lambda g: (g[0][:2], g[0][3], g[0][2])
    ):
        start = origin + index * bucket
        metrics = evaluate(np.array(ys), np.array(ss), threshold=threshold, k=k, level=level, bootstrap=bootstrap)
        out.append(
            CohortPerformance(
                model, version, arm or None, start, start + bucket, metrics, assumed_negative=seen.count(False)
            )
        )
    return out
