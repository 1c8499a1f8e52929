"""Label-free performance estimates from calibrated scores (CBPE-style), and their check once labels arrive.

If a score ``p`` is calibrated — ``P(y = 1 | p) = p`` — then before any label is known each record is a
positive with probability ``p``, so the confusion matrix and the AUROC the labels *will* give can be
estimated from the scores alone:

- expected confusion at threshold ``t``: ``TP = Σ_{p≥t} p``, ``FP = Σ_{p≥t} (1-p)``, ``FN = Σ_{p<t} p``,
  ``TN = Σ_{p<t} (1-p)``; sensitivity and PPV are ratios of these expectations (as NannyML's CBPE does);
- expected AUROC: the expected number of correctly ordered (positive, negative) pairs over the expected
  number of pairs, ``Σ_{i≠j} p_i (1-p_j) [s_i > s_j] (ties ½) / Σ_{i≠j} p_i (1-p_j)``, in O(n log n);
- ``auroc_band``: where the realised AUROC falls with probability ``level`` if the scores are calibrated
  (Monte-Carlo labels ``y ~ Bernoulli(p)``, seeded), so a small cohort's sampling error is not read as drift.

**The estimate assumes no concept drift.** It stays right under covariate shift (the inputs move, ``P(y|x)``
does not, so calibration holds), and is wrong, without any sign, when ``P(y|x)`` changes. Every estimate
carries ``assumes_no_concept_drift=True`` for the page that shows it, and :func:`check` compares it with the
realised value when the labels mature. Scores that are not calibrated can be calibrated on labelled reference
data first (:func:`fit_isotonic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from kawa.monitor.errors import MonitorError
from kawa.monitor.performance import auroc as realised_auroc

__all__ = ["Calibration", "Check", "Estimate", "check", "estimate", "expected_auroc", "fit_isotonic"]


def _probs(p: ArrayLike) -> NDArray[np.float64]:
    probs = np.asarray(p, dtype=np.float64)
    if probs.ndim != 1 or not np.isfinite(probs).all() or (probs.size and (probs.min() < 0 or probs.max() > 1)):
        raise MonitorError("a label-free estimate needs calibrated scores: a 1-d array of probabilities in [0, 1]")
    return probs


def expected_auroc(p: ArrayLike, scores: ArrayLike | None = None) -> float:
    """The AUROC the labels will give if ``P(y=1) = p`` independently per record; records are ranked by
    ``scores`` (default ``p``). NaN when fewer than two records or no expected pair."""
    probs = _probs(p)
    s = probs if scores is None else np.asarray(scores, dtype=np.float64)
    if s.shape != probs.shape:
        raise MonitorError("scores and probabilities must have one length")
    if probs.size < 2:
        return float("nan")
    unique, inverse = np.unique(s, return_inverse=True)
    neg = 1.0 - probs
    group = np.bincount(inverse, neg, unique.size)  # expected negatives per distinct score
    below = np.cumsum(group) - group  # ... at strictly lower scores
    tied = group[inverse] - neg  # ... at the same score, the record itself excluded
    numerator = float(np.sum(probs * (below[inverse] + 0.5 * tied)))
    pairs = float(probs.sum() * neg.sum() - np.sum(probs * neg))
    return numerator / pairs if pairs > 0 else float("nan")


@dataclass(frozen=True)
class Estimate:
    """What the labels of a cohort are expected to show, from its calibrated scores alone."""

    n: int
    threshold: float
    expected_positives: float
    tp: float
    fp: float
    fn: float
    tn: float
    sensitivity: float
    ppv: float
    brier: float
    auroc: float
    auroc_band: tuple[float, float]
    level: float
    assumes_no_concept_drift: bool = True


def estimate(p: ArrayLike, *, threshold: float = 0.5, level: float = 0.95, draws: int = 400, seed: int = 0) -> Estimate:
    """The label-free estimate of a cohort whose calibrated scores are ``p``."""
    probs = _probs(p)
    called = probs >= threshold
    tp, fp = float(probs[called].sum()), float((1 - probs[called]).sum())
    fn, tn = float(probs[~called].sum()), float((1 - probs[~called]).sum())
    return Estimate(
        n=int(probs.size),
        threshold=threshold,
        expected_positives=float(probs.sum()),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        sensitivity=tp / (tp + fn) if tp + fn > 0 else float("nan"),
        ppv=tp / (tp + fp) if tp + fp > 0 else float("nan"),
        brier=float(np.mean(probs * (1 - probs))) if probs.size else float("nan"),
        auroc=expected_auroc(probs),
        auroc_band=_band(probs, level, draws, seed),
        level=level,
    )


def _band(probs: NDArray[np.float64], level: float, draws: int, seed: int) -> tuple[float, float]:
    """The central ``level`` range of the AUROC of labels drawn from ``probs``: the ranks of the scores are
    fixed, so each draw's AUROC is its Mann-Whitney U from one rank vector (all draws in one product)."""
    if probs.size < 2:
        return (float("nan"), float("nan"))
    ranks = stats.rankdata(probs)
    rng = np.random.default_rng(seed)
    labels = rng.random((draws, probs.size)) < probs
    m = labels.sum(axis=1).astype(np.float64)
    n = probs.size - m
    ok = (m > 0) & (n > 0)
    u = labels.astype(np.float64) @ ranks - m * (m + 1) / 2
    aucs = u[ok] / (m[ok] * n[ok])
    if aucs.size == 0:
        return (float("nan"), float("nan"))
    low, high = np.quantile(aucs, [0.5 - level / 2, 0.5 + level / 2])
    return (float(low), float(high))


@dataclass(frozen=True)
class Check:
    """An estimate against the realised values of the same cohort. ``flagged``: the AUROC gap exceeds the
    tolerance *and* lies outside the band sampling alone explains — the no-concept-drift assumption (or the
    calibration) no longer holds for this cohort."""

    estimated_auroc: float
    realised_auroc: float
    gap: float
    tolerance: float
    within_band: bool
    flagged: bool
    estimated_sensitivity: float
    realised_sensitivity: float
    estimated_ppv: float
    realised_ppv: float


def check(est: Estimate, y: ArrayLike, p: ArrayLike, *, tolerance: float = 0.03) -> Check:
    """Compare ``est`` with the labels ``y`` that matured for the cohort whose scores are ``p``."""
    labels, probs = np.asarray(y), _probs(p)
    if labels.shape != probs.shape or probs.size != est.n:
        raise MonitorError("check an estimate against the labels and scores of the cohort it was made for")
    real = realised_auroc(labels, probs)
    gap = real - est.auroc
    low, high = est.auroc_band
    within = bool(low <= real <= high) if not math.isnan(real) else False
    called = probs >= est.threshold
    tp = int((called & (labels == 1)).sum())
    positives, calls = int(labels.sum()), int(called.sum())
    return Check(
        estimated_auroc=est.auroc,
        realised_auroc=real,
        gap=gap,
        tolerance=tolerance,
        within_band=within,
        flagged=bool(abs(gap) > tolerance and not within),
        estimated_sensitivity=est.sensitivity,
        realised_sensitivity=tp / positives if positives else float("nan"),
        estimated_ppv=est.ppv,
        realised_ppv=tp / calls if calls else float("nan"),
    )


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw scores to probabilities (isotonic regression fitted on labelled reference
    data): a score takes the value of the block of the largest reference score at or below it."""

    edges: tuple[float, ...]
    values: tuple[float, ...]

    def apply(self, scores: ArrayLike) -> NDArray[np.float64]:
        s = np.asarray(scores, dtype=np.float64)
        index = np.searchsorted(np.asarray(self.edges), s, side="right") - 1
        return np.asarray(self.values)[np.clip(index, 0, len(self.values) - 1)]


def fit_isotonic(scores: ArrayLike, labels: ArrayLike) -> Calibration:
    """Isotonic regression of ``labels`` on ``scores`` by pool-adjacent-violators (equal scores pooled first)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if s.shape != y.shape or s.ndim != 1 or s.size == 0:
        raise MonitorError("fit a calibration on two non-empty 1-d arrays of one length (scores and labels)")
    unique, inverse = np.unique(s, return_inverse=True)
    weights = np.bincount(inverse).astype(np.float64)
    means = np.bincount(inverse, y) / weights
    starts: list[float] = []
    values: list[float] = []
    mass: list[float] = []
    for x, v, w in zip(unique.tolist(), means.tolist(), weights.tolist(), strict=True):
        starts.append(x)
        values.append(v)
        mass.append(w)
        while len(values) > 1 and values[-2] >= values[-1]:
            w2, v2 = mass.pop(), values.pop()
            starts.pop()
            total = mass[-1] + w2
            values[-1] = (values[-1] * mass[-1] + v2 * w2) / total
            mass[-1] = total
    return Calibration(tuple(starts), tuple(values))
