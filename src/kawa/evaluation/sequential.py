"""Always-valid inference for a difference of means or proportions (look as often as you like).

The test is the mixture-normal mSPRT of Johari, Pekelis, Koomen & Walsh (2017, 2021) in its asymptotic form,
which is the asymptotic confidence sequence of Howard, Ramdas, McAuliffe & Sekhon (2021) / Waudby-Smith et al.
(2023, eq. 9). With ``N`` units in total, the estimate ``d`` of the difference, its variance ``V`` and the
per-unit variance ``s² = V·N``, and a mixing variance ``rho²`` (per unit):

    half-width(N) = sqrt( s² · 2(Nrho²+1)/(N²rho²) · ln( sqrt(Nrho²+1)/alpha ) )
    e-value(N)    = exp( rho² N² (d-θ₀)² / (2 s² (Nrho²+1)) ) / sqrt(Nrho²+1)

The e-value is (asymptotically) a nonnegative martingale under ``θ = θ₀``, so ``p = min(1, 1/max e)`` over all
looks is an always-valid p-value and the intervals hold simultaneously at every look with probability ≥ 1-alpha.
``rho²`` is given, fitted from past experiments (:func:`fitted_mixing_variance`), or taken from a planned
horizon ``n*`` so that it minimises the width at ``n*`` (Howard et al. 2021):
``rho² = (-2 ln alpha + ln(-2 ln alpha + 1)) / n*``. All array functions broadcast, so thousands of simulated runs are
one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from kawa.evaluation.errors import EvaluationError

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


def planned_mixing_variance(alpha: float, horizon: float) -> float:
    """The per-unit mixing variance rho² that makes the confidence sequence narrowest at ``horizon`` units."""
    if not 0 < alpha < 1 or not horizon > 0:
        raise EvaluationError(f"the mixing variance needs 0 < alpha < 1 and a positive horizon, got alpha={alpha}, "
                              f"horizon={horizon}")
    la = -2.0 * math.log(alpha)
    return (la + math.log(la + 1.0)) / float(horizon)


def fitted_mixing_variance(effects: ArrayLike, variances: ArrayLike, unit_variance: float) -> float:
    """rho² fitted from past experiments: their effect estimates ``d_i`` with sampling variances ``V_i``.

    The mixture is a normal prior on the effect, ``N(0, tau²)``; by the method of moments
    ``tau² = mean(d_i² - V_i)`` (E[d²] = tau² + V), and in per-unit terms ``rho² = tau² / s²`` for the new
    experiment's per-unit variance ``s²``. Refused when the past effects are indistinguishable from noise.
    """
    d = np.asarray(effects, dtype=float)
    v = np.asarray(variances, dtype=float)
    if d.ndim != 1 or d.shape != v.shape or len(d) < 3 or np.any(v < 0):
        raise EvaluationError("fitting the mixing variance needs at least three past effects, each with its "
                              "(non-negative) sampling variance")
    if not unit_variance > 0:
        raise EvaluationError("the per-unit variance of the new experiment must be positive")
    tau2 = float(np.mean(d * d - v))
    if not tau2 > 0:
        raise EvaluationError("the past effects are no larger than their noise, so no mixing variance can be "
                              "fitted from them; plan a horizon instead")
    return tau2 / unit_variance


def half_width(unit_variance: ArrayLike, n: ArrayLike, alpha: float, rho2: float) -> FloatArray:
    """Half-width of the (1-alpha) asymptotic confidence sequence at ``n`` units with per-unit variance ``s²``."""
    s2 = np.asarray(unit_variance, dtype=float)
    nn = np.asarray(n, dtype=float)
    t = nn * rho2 + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.sqrt(s2 * 2.0 * t / (nn * nn * rho2) * np.log(np.sqrt(t) / alpha))
    return out


def log_e_value(estimate: ArrayLike, unit_variance: ArrayLike, n: ArrayLike, rho2: float,
                null: float = 0.0) -> FloatArray:
    """Log of the mixture e-value against ``θ = null`` (the mSPRT likelihood ratio)."""
    d = np.asarray(estimate, dtype=float) - null
    s2 = np.asarray(unit_variance, dtype=float)
    nn = np.asarray(n, dtype=float)
    t = nn * rho2 + 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = rho2 * nn * nn * d * d / (2.0 * s2 * t) - 0.5 * np.log(t)
    return out


@dataclass(frozen=True)
class SequentialInterval:
    """One look: the estimate (treatment - control), the always-valid interval and evidence at this look.

    ``p_value`` here is ``min(1, 1/e)`` at this look; the always-valid p-value of an experiment is the running
    minimum over its looks (kept by :mod:`kawa.evaluation.decision`).
    """

    estimate: float
    lower: float
    upper: float
    e_value: float
    p_value: float
    n: int
    unit_variance: float


def _interval(estimate: float, variance: float, n: int, alpha: float, rho2: float,
              null: float) -> SequentialInterval:
    if n < 2 or not variance > 0 or not math.isfinite(variance):
        return SequentialInterval(estimate, -math.inf, math.inf, 1.0, 1.0, n, math.nan)
    s2 = variance * n
    hw = float(half_width(s2, n, alpha, rho2))
    log_e = float(log_e_value(estimate, s2, n, rho2, null))
    e = math.exp(min(log_e, 700.0))
    return SequentialInterval(estimate, estimate - hw, estimate + hw, e, min(1.0, 1.0 / e), n, s2)


def _check_rho(alpha: float, rho2: float) -> None:
    if not 0 < alpha < 1 or not (rho2 > 0 and math.isfinite(rho2)):
        raise EvaluationError(f"a sequential test needs 0 < alpha < 1 and a positive mixing variance, got "
                              f"alpha={alpha}, mixing variance={rho2}")


def mean_difference(n_a: int, mean_a: float, var_a: float, n_b: int, mean_b: float, var_b: float, *,
                    alpha: float, rho2: float, null: float = 0.0) -> SequentialInterval:
    """Always-valid interval for ``mean_b - mean_a`` from per-arm counts, means and sample variances (ddof=1).

    Fewer than two units in an arm gives the uninformative interval (-∞, ∞) and e-value 1.
    """
    _check_rho(alpha, rho2)
    if min(n_a, n_b) < 2:
        return SequentialInterval(mean_b - mean_a, -math.inf, math.inf, 1.0, 1.0, n_a + n_b, math.nan)
    variance = var_a / n_a + var_b / n_b
    return _interval(mean_b - mean_a, variance, n_a + n_b, alpha, rho2, null)


def proportion_difference(n_a: int, x_a: int, n_b: int, x_b: int, *, alpha: float, rho2: float,
                          null: float = 0.0) -> SequentialInterval:
    """Always-valid interval for ``p_b - p_a`` from counts of units and of events (Bernoulli variance p(1-p))."""
    if not (0 <= x_a <= n_a and 0 <= x_b <= n_b):
        raise EvaluationError(f"event counts must lie between 0 and the unit counts, got {x_a}/{n_a} and "
                              f"{x_b}/{n_b}")
    p_a = x_a / n_a if n_a else 0.0
    p_b = x_b / n_b if n_b else 0.0
    return mean_difference(n_a, p_a, p_a * (1 - p_a), n_b, p_b, p_b * (1 - p_b), alpha=alpha, rho2=rho2,
                           null=null)


def cuped_difference(y_a: ArrayLike, x_a: ArrayLike, y_b: ArrayLike, x_b: ArrayLike, *, alpha: float,
                     rho2: float, null: float = 0.0) -> SequentialInterval:
    """Regression-adjusted (CUPED) always-valid interval for ``E[y_b] - E[y_a]`` with a pre-period covariate.

    Each outcome is adjusted by the pooled slope, ``y - θ(x - x̄)`` with ``θ = Cov(y, x)/Var(x)`` over both arms,
    and the asymptotic confidence sequence is applied to the adjusted means (Lindon, Ham, Tingley & Bojinov
    2022, asymptotic regression-adjusted intervals). The variance shrinks by ``1 - corr(x, y)²``; the estimand is
    unchanged because the covariate is measured before assignment.
    """
    _check_rho(alpha, rho2)
    ya, xa, yb, xb = (np.asarray(v, dtype=float) for v in (y_a, x_a, y_b, x_b))
    if ya.shape != xa.shape or yb.shape != xb.shape or ya.ndim != 1 or yb.ndim != 1:
        raise EvaluationError("CUPED needs one covariate value per outcome in each arm (equal-length 1-D arrays)")
    if len(ya) < 2 or len(yb) < 2:
        return SequentialInterval(math.nan, -math.inf, math.inf, 1.0, 1.0, len(ya) + len(yb), math.nan)
    y = np.concatenate([ya, yb])
    x = np.concatenate([xa, xb])
    var_x = float(np.var(x, ddof=1))
    theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x) if var_x > 0 else 0.0
    x_bar = float(x.mean())
    adj_a = ya - theta * (xa - x_bar)
    adj_b = yb - theta * (xb - x_bar)
    return mean_difference(len(adj_a), float(adj_a.mean()), float(adj_a.var(ddof=1)), len(adj_b),
                           float(adj_b.mean()), float(adj_b.var(ddof=1)), alpha=alpha, rho2=rho2, null=null)


@dataclass(frozen=True)
class FixedTest:
    """A fixed-horizon (look once) test: valid only at the one sample size planned in advance."""

    estimate: float
    statistic: float
    p_value: float
    lower: float
    upper: float


def welch_test(n_a: int, mean_a: float, var_a: float, n_b: int, mean_b: float, var_b: float, *,
               alpha: float = 0.05) -> FixedTest:
    """Welch's unequal-variance t-test of ``mean_b - mean_a`` (two-sided), from summary statistics."""
    se2_a, se2_b = var_a / n_a, var_b / n_b
    se = math.sqrt(se2_a + se2_b)
    dof = (se2_a + se2_b) ** 2 / (se2_a**2 / (n_a - 1) + se2_b**2 / (n_b - 1))
    d = mean_b - mean_a
    t = d / se
    q = float(stats.t.ppf(1 - alpha / 2, dof))
    return FixedTest(d, t, float(2 * stats.t.sf(abs(t), dof)), d - q * se, d + q * se)


def z_test_p(estimate: ArrayLike, variance: ArrayLike) -> FloatArray:
    """Two-sided fixed-n z-test p-values (vectorised); repeated at every look it is *not* valid (see docs)."""
    z = np.asarray(estimate, dtype=float) / np.sqrt(np.asarray(variance, dtype=float))
    out: FloatArray = 2.0 * stats.norm.sf(np.abs(z))
    return out
