"""Off-policy evaluation of a candidate policy from logged decisions, and intervention effects.

A log holds, per unit ``i``: the action taken ``Aᵢ`` (arm index), its reward ``rᵢ``, the logging policy's
probabilities ``μ(·|xᵢ)`` over all K actions (the assignment weights — known exactly because Kawa randomises),
the candidate's probabilities ``π(·|xᵢ)`` and, for the doubly robust estimator, features ``xᵢ``. With the
importance weight ``wᵢ = π(Aᵢ|xᵢ)/μ(Aᵢ|xᵢ)``:

- IPS:   ``V = mean(w r)``
- SNIPS: ``V = Σ w r / Σ w``
- DR:    ``V = mean( Σₐ π(a|x) q̂(x, a) + w (r - q̂(x, A)) )`` with a per-action ridge outcome model ``q̂`` fitted
  on the other folds (K-fold cross-fitting, Chernozhukov et al. 2018), so ``q̂`` never sees the unit it predicts.

Each comes with a normal-approximation standard error and interval, the effective sample size
``(Σw)²/Σw²`` and overlap diagnostics. A log without propensities, or one where the candidate puts probability
on an action the logging policy never takes, is refused: no estimator can value what was never tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from kawa.evaluation.errors import EvaluationError, NoOverlap, NoPropensities
from kawa.evaluation.sequential import ArrayLike, FloatArray, half_width

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Overlap:
    ess: float
    ess_fraction: float
    max_weight: float
    min_propensity: float  # smallest μ(a|x) over the actions the candidate may take


@dataclass(frozen=True)
class OPEResult:
    method: str
    estimate: float
    se: float
    lower: float
    upper: float
    n: int
    overlap: Overlap


def _prepare(rewards: ArrayLike, actions: ArrayLike, behavior: ArrayLike | None,
             target: ArrayLike) -> tuple[FloatArray, IntArray, FloatArray, FloatArray, FloatArray]:
    if behavior is None:
        raise NoPropensities("the decision log has no propensities; off-policy evaluation needs the logging "
                             "probability of every action — log the assignment propensities, or configure a "
                             "randomised exploration share for a deterministic champion")
    r = np.asarray(rewards, dtype=float)
    a = np.asarray(actions)
    mu = np.asarray(behavior, dtype=float)
    pi = np.asarray(target, dtype=float)
    n = r.shape[0]
    if r.ndim != 1 or a.shape != (n,) or mu.ndim != 2 or mu.shape[0] != n or pi.shape != mu.shape:
        raise EvaluationError("give one reward and one action per unit, and logging and candidate probabilities "
                              "as (units x actions) arrays of the same shape")
    if n < 2:
        raise EvaluationError("off-policy evaluation needs at least two logged units")
    if np.any(np.isnan(mu)):
        raise NoPropensities("the decision log has missing propensities; every logged decision must carry the "
                             "probabilities it was drawn with")
    if not np.issubdtype(a.dtype, np.integer) or np.any((a < 0) | (a >= mu.shape[1])):
        raise EvaluationError(f"actions must be arm indices between 0 and {mu.shape[1] - 1}")
    if np.any(mu < 0) or np.any(pi < 0) or not (np.allclose(mu.sum(1), 1) and np.allclose(pi.sum(1), 1)):
        raise EvaluationError("logging and candidate probabilities must be non-negative and sum to 1 per unit")
    if np.any(~np.isfinite(r)):
        raise EvaluationError("rewards must be finite numbers")
    blind = (pi > 0) & (mu <= 0)
    if np.any(blind):
        units = int(blind.any(axis=1).sum())
        raise NoOverlap(f"the candidate takes actions the logging policy never takes ({units} of {n} units); "
                        "the log cannot value it — give those actions a randomised exploration share first")
    rows = np.arange(n)
    w = pi[rows, a] / mu[rows, a]
    return r, a.astype(np.int64), mu, pi, w


def _overlap(w: FloatArray, mu: FloatArray, pi: FloatArray) -> Overlap:
    ess = float(w.sum() ** 2 / np.sum(w * w)) if np.any(w > 0) else 0.0
    return Overlap(ess, ess / len(w), float(w.max()), float(mu[pi > 0].min()))


def _result(method: str, estimate: float, se: float, n: int, overlap: Overlap, alpha: float) -> OPEResult:
    z = float(stats.norm.ppf(1 - alpha / 2))
    return OPEResult(method, estimate, se, estimate - z * se, estimate + z * se, n, overlap)


def ips(rewards: ArrayLike, actions: ArrayLike, behavior: ArrayLike | None, target: ArrayLike, *,
        alpha: float = 0.05) -> OPEResult:
    """Inverse propensity scoring: unbiased, high variance when weights are large."""
    r, _, mu, pi, w = _prepare(rewards, actions, behavior, target)
    terms = w * r
    return _result("ips", float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(len(r))), len(r),
                   _overlap(w, mu, pi), alpha)


def snips(rewards: ArrayLike, actions: ArrayLike, behavior: ArrayLike | None, target: ArrayLike, *,
          alpha: float = 0.05) -> OPEResult:
    """Self-normalised IPS: slightly biased, much lower variance; SE by the delta method."""
    r, _, mu, pi, w = _prepare(rewards, actions, behavior, target)
    if not w.sum() > 0:
        raise NoOverlap("the candidate gives zero weight to every logged action; the log cannot value it")
    v = float(np.sum(w * r) / np.sum(w))
    se = float(np.sqrt(np.mean((w * (r - v)) ** 2)) / w.mean() / math.sqrt(len(r)))
    return _result("snips", v, se, len(r), _overlap(w, mu, pi), alpha)


def _ridge_fit(x: FloatArray, y: FloatArray, ridge: float) -> FloatArray:
    design = np.column_stack([np.ones(len(x)), x])
    penalty = ridge * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ y)
    return np.asarray(coef, dtype=np.float64)


def dr_terms(rewards: ArrayLike, actions: ArrayLike, behavior: ArrayLike | None, target: ArrayLike,
             features: ArrayLike, *, folds: int = 5, ridge: float = 1.0, seed: int = 0) -> FloatArray:
    """The cross-fitted doubly robust pseudo-outcomes; their mean is the DR estimate of the candidate's value."""
    r, a, mu, pi, w = _prepare(rewards, actions, behavior, target)
    x = np.asarray(features, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] != len(r):
        raise EvaluationError("give one feature row per logged unit")
    if not 2 <= folds <= len(r):
        raise EvaluationError(f"cross-fitting needs between 2 and n folds, got {folds}")
    n, k = mu.shape
    fold = np.random.default_rng(seed).permutation(n) % folds
    q: FloatArray = np.zeros((n, k))
    for f in range(folds):
        train, test = fold != f, fold == f
        design = np.column_stack([np.ones(int(test.sum())), x[test]])
        for arm in range(k):
            sel = train & (a == arm)
            if sel.sum() >= 2:
                q[test, arm] = design @ _ridge_fit(x[sel], r[sel], ridge)
            elif sel.any():
                q[test, arm] = r[sel].mean()
    rows = np.arange(n)
    out: FloatArray = np.sum(pi * q, axis=1) + w * (r - q[rows, a])
    return out


def doubly_robust(rewards: ArrayLike, actions: ArrayLike, behavior: ArrayLike | None, target: ArrayLike,
                  features: ArrayLike, *, folds: int = 5, ridge: float = 1.0, seed: int = 0,
                  alpha: float = 0.05) -> OPEResult:
    """Cross-fitted doubly robust estimate: consistent if either the propensities or the outcome model are right
    (the propensities are right by construction when Kawa randomised)."""
    terms = dr_terms(rewards, actions, behavior, target, features, folds=folds, ridge=ridge, seed=seed)
    _, _, mu, pi, w = _prepare(rewards, actions, behavior, target)
    return _result("dr", float(terms.mean()), float(terms.std(ddof=1) / math.sqrt(len(terms))), len(terms),
                   _overlap(w, mu, pi), alpha)


def paired_difference(candidate: ArrayLike, champion: ArrayLike, *, alpha: float = 0.05) -> OPEResult:
    """The value of (candidate - champion) when both policies' rewards were observed on the same units — shadow
    scoring, where every unit's outcome does not depend on which model decided it, so the candidate's reward is
    known without it acting (every importance weight is 1). Mean of the paired differences, normal interval."""
    c = np.asarray(candidate, dtype=float)
    b = np.asarray(champion, dtype=float)
    if c.ndim != 1 or c.shape != b.shape:
        raise EvaluationError("give one candidate and one champion reward per unit")
    if len(c) < 2:
        raise EvaluationError("off-policy evaluation needs at least two logged units")
    if np.any(~np.isfinite(c)) or np.any(~np.isfinite(b)):
        raise EvaluationError("rewards must be finite numbers")
    diff = c - b
    n = len(diff)
    return _result("paired", float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n)), n,
                   Overlap(float(n), 1.0, 1.0, 1.0), alpha)


def dr_confidence_sequence(terms: ArrayLike, *, alpha: float, rho2: float) -> tuple[float, float, float]:
    """Always-valid (asymptotic) interval for the mean of DR pseudo-outcomes: ``(estimate, lower, upper)``."""
    t = np.asarray(terms, dtype=float)
    if t.ndim != 1 or len(t) < 2:
        raise EvaluationError("a confidence sequence needs at least two pseudo-outcomes")
    hw = float(half_width(float(t.var(ddof=1)), len(t), alpha, rho2))
    m = float(t.mean())
    return m, m - hw, m + hw


@dataclass(frozen=True)
class Effect:
    estimate: float
    se: float
    lower: float
    upper: float


def intention_to_treat(outcomes: ArrayLike, assigned: ArrayLike, *, alpha: float = 0.05) -> Effect:
    """Effect of *being assigned* the arm (vs the randomised holdout) on the outcome: a difference of means
    between randomised groups, so it is never confounded by who followed an alert."""
    y = np.asarray(outcomes, dtype=float)
    z = np.asarray(assigned, dtype=bool)
    if y.shape != z.shape or z.sum() < 2 or (~z).sum() < 2:
        raise EvaluationError("intention-to-treat needs one assignment flag per outcome and at least two units "
                              "in the arm and in the holdout")
    d = float(y[z].mean() - y[~z].mean())
    se = math.sqrt(float(y[z].var(ddof=1)) / z.sum() + float(y[~z].var(ddof=1)) / (~z).sum())
    q = float(stats.norm.ppf(1 - alpha / 2))
    return Effect(d, se, d - q * se, d + q * se)


def wald_iv(outcomes: ArrayLike, assigned: ArrayLike, treated: ArrayLike, *, alpha: float = 0.05,
            min_first_stage_f: float = 10.0) -> Effect:
    """Effect of *treatment* among compliers with the assignment as the instrument (Wald estimator,
    ``ITT_y / ITT_d``), SE by the delta method. Refuses a weak instrument (first-stage F below the threshold)."""
    y = np.asarray(outcomes, dtype=float)
    z = np.asarray(assigned, dtype=bool)
    d = np.asarray(treated, dtype=float)
    if d.shape != y.shape:
        raise EvaluationError("the Wald estimator needs one treatment flag per outcome")
    itt_y = intention_to_treat(y, z)
    itt_d = intention_to_treat(d, z)
    f_stat = (itt_d.estimate / itt_d.se) ** 2 if itt_d.se > 0 else (math.inf if itt_d.estimate else 0.0)
    if not f_stat >= min_first_stage_f:
        raise EvaluationError(f"assignment barely changes treatment (first-stage F = {f_stat:.3g} < "
                              f"{min_first_stage_f:g}); the instrument is too weak for a treatment effect — report "
                              "the intention-to-treat effect instead")
    beta = itt_y.estimate / itt_d.estimate
    cov = sum(float(np.cov(y[g], d[g], ddof=1)[0, 1]) / g.sum() for g in (z, ~z))
    var = (itt_y.se**2 + beta**2 * itt_d.se**2 - 2 * beta * cov) / itt_d.estimate**2
    se = math.sqrt(max(var, 0.0))
    q = float(stats.norm.ppf(1 - alpha / 2))
    return Effect(beta, se, beta - q * se, beta + q * se)
