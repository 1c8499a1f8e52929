"""Always-valid inference: seeded A/A simulations under continuous peeking, coverage, CUPED, and cross-checks
against gbstats (sequential interval) and scipy (fixed-n tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.sequential import (
    cuped_difference,
    fitted_mixing_variance,
    half_width,
    log_e_value,
    mean_difference,
    planned_mixing_variance,
    proportion_difference,
    welch_test,
    z_test_p,
)
from tests.evaluation.gbstats_env import gbstats_sequential

ALPHA = 0.05


def _peeking_runs(rng: np.random.Generator, runs: int, looks: int, batch: int, effect: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run and look: the difference of means, its variance and the total n (both arms, normal outcomes)."""
    a = rng.standard_normal((runs, looks * batch))
    b = rng.standard_normal((runs, looks * batch)) + effect
    n = np.arange(1, looks + 1) * batch
    stats_ = []
    for arm in (a, b):
        s = np.cumsum(arm, axis=1)[:, n - 1]
        ss = np.cumsum(arm * arm, axis=1)[:, n - 1]
        mean = s / n
        var = (ss - s * s / n) / (n - 1)
        stats_.append((mean, var))
    (m_a, v_a), (m_b, v_b) = stats_
    return m_b - m_a, v_a / n + v_b / n, np.broadcast_to(2 * n, m_a.shape)


def test_continuous_peeking_aa_false_positive_rate_stays_within_alpha_while_naive_z_is_inflated() -> None:
    rng = np.random.default_rng(20260)
    runs, looks, batch = 2000, 40, 25
    d, var, n = _peeking_runs(rng, runs, looks, batch, effect=0.0)
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * looks * batch)
    log_e = log_e_value(d, var * n, n, rho2)
    sequential_fpr = float(np.mean(np.any(log_e >= math.log(1 / ALPHA), axis=1)))
    naive_fpr = float(np.mean(np.any(z_test_p(d, var) <= ALPHA, axis=1)))
    assert sequential_fpr <= ALPHA + 0.01, sequential_fpr
    assert 0.2 <= naive_fpr <= 0.4, naive_fpr
    # the interval and the e-value are one test: the interval excludes 0 exactly when e >= 1/alpha
    hw = half_width(var * n, n, ALPHA, rho2)
    assert np.array_equal(np.abs(d) > hw, log_e > math.log(1 / ALPHA))


def test_confidence_sequence_covers_the_true_difference_at_every_look_in_95_percent_of_runs() -> None:
    rng = np.random.default_rng(7)
    runs, looks, batch, effect = 1000, 40, 25, 0.3
    d, var, n = _peeking_runs(rng, runs, looks, batch, effect)
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * looks * batch)
    hw = half_width(var * n, n, ALPHA, rho2)
    covered = np.all(np.abs(d - effect) <= hw, axis=1)
    assert covered.mean() >= 0.95, covered.mean()
    # and it has power: most runs exclude 0 by the last look
    assert np.mean(np.abs(d[:, -1]) > hw[:, -1]) > 0.8


def test_proportion_aa_under_peeking_stays_within_alpha() -> None:
    rng = np.random.default_rng(11)
    runs, looks, batch, p = 2000, 30, 50, 0.2
    x_a = np.cumsum(rng.binomial(batch, p, (runs, looks)), axis=1)
    x_b = np.cumsum(rng.binomial(batch, p, (runs, looks)), axis=1)
    n_arm = np.arange(1, looks + 1) * batch
    p_a, p_b = x_a / n_arm, x_b / n_arm
    var = p_a * (1 - p_a) / n_arm + p_b * (1 - p_b) / n_arm
    n = 2 * n_arm
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * looks * batch)
    fpr = float(np.mean(np.any(log_e_value(p_b - p_a, var * n, n, rho2) >= math.log(1 / ALPHA), axis=1)))
    assert fpr <= ALPHA + 0.01, fpr
    one = proportion_difference(int(n_arm[-1]), int(x_a[0, -1]), int(n_arm[-1]), int(x_b[0, -1]), alpha=ALPHA,
                                rho2=rho2)
    assert one.estimate == pytest.approx(p_b[0, -1] - p_a[0, -1])
    assert one.upper - one.estimate == pytest.approx(half_width(var[0, -1] * n[-1], n[-1], ALPHA, rho2))


def test_power_and_units_to_decision_compared_with_a_fixed_horizon_test_of_the_same_power() -> None:
    rng = np.random.default_rng(12)
    delta, batch = 0.15, 25
    per_arm = math.ceil(2 * (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 / delta**2)  # 80 % power: 698
    looks = math.ceil(3 * per_arm / batch)
    d, var, n = _peeking_runs(rng, 1000, looks, batch, delta)
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * per_arm)
    rejected = log_e_value(d, var * n, n, rho2) >= math.log(1 / ALPHA)
    units = np.where(rejected.any(axis=1), n[0, rejected.argmax(axis=1)], np.inf)
    fixed_look = round(per_arm / batch) - 1
    fixed_power = float(np.mean(z_test_p(d[:, fixed_look], var[:, fixed_look]) <= ALPHA))
    assert 0.75 <= fixed_power <= 0.85  # the fixed-horizon test has the power it was sized for
    # the always-valid test, looking after every batch, decides at about the fixed sample size in the median...
    assert float(np.median(units)) <= 1.2 * 2 * per_arm
    # ...and reaches more power than the fixed test if it may run to 3x that size
    assert np.mean(units <= 3 * 2 * per_arm) >= 0.95


def test_the_planned_mixing_variance_gives_a_near_narrowest_interval_at_the_horizon() -> None:
    # the closed form is Howard et al.'s approximation of the optimum: within 0.1% of the true minimum width
    for horizon in (500, 4000, 100_000):
        planned = planned_mixing_variance(ALPHA, horizon)
        grid = planned * np.exp(np.linspace(-3, 3, 601))
        widths = np.array([float(half_width(1.0, horizon, ALPHA, r)) for r in grid])
        assert float(half_width(1.0, horizon, ALPHA, planned)) <= widths.min() * 1.001
        assert widths[0] > widths.min() * 1.05 and widths[-1] > widths.min() * 1.05  # a real, interior optimum


def test_cuped_narrows_the_interval_and_keeps_coverage() -> None:
    rng = np.random.default_rng(3)
    runs, looks, batch, effect = 300, 10, 60, 0.2
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * looks * batch)
    covered, ratios = 0, []
    for _ in range(runs):
        x_a, x_b = rng.standard_normal(looks * batch), rng.standard_normal(looks * batch)
        y_a = 0.8 * x_a + 0.6 * rng.standard_normal(looks * batch)
        y_b = 0.8 * x_b + 0.6 * rng.standard_normal(looks * batch) + effect
        ok = True
        for k in range(1, looks + 1):
            m = k * batch
            adj = cuped_difference(y_a[:m], x_a[:m], y_b[:m], x_b[:m], alpha=ALPHA, rho2=rho2)
            ok &= adj.lower <= effect <= adj.upper
        plain = mean_difference(m, y_a.mean(), y_a.var(ddof=1), m, y_b.mean(), y_b.var(ddof=1), alpha=ALPHA,
                                rho2=rho2)
        ratios.append((adj.upper - adj.lower) / (plain.upper - plain.lower))
        covered += ok
    assert covered / runs >= 0.95, covered / runs
    assert float(np.median(ratios)) == pytest.approx(0.6, abs=0.05)  # sqrt(1 - corr²) with corr = 0.8


@pytest.mark.timeout(1200)  # the first run builds gbstats' virtualenv
def test_sequential_interval_equals_gbstats_on_the_same_data() -> None:
    rng = np.random.default_rng(5)
    cases, ours = [], []
    for i in range(12):
        n_a, n_b = int(rng.integers(50, 5000)), int(rng.integers(50, 5000))
        alpha = [0.05, 0.01, 0.1][i % 3]
        horizon = float(rng.integers(500, 20000))
        rho2 = planned_mixing_variance(alpha, horizon)
        if i % 2 == 0:
            a, b = rng.normal(1.0, 2.0, n_a), rng.normal(1.1, 2.5, n_b)
            cases.append({"kind": "mean", "n_a": n_a, "sum_a": float(a.sum()), "ss_a": float((a * a).sum()),
                          "n_b": n_b, "sum_b": float(b.sum()), "ss_b": float((b * b).sum()), "alpha": alpha,
                          "horizon": horizon})
            ours.append(mean_difference(n_a, float(a.mean()), float(a.var(ddof=1)), n_b, float(b.mean()),
                                        float(b.var(ddof=1)), alpha=alpha, rho2=rho2))
        else:
            x_a, x_b = int(rng.binomial(n_a, 0.3)), int(rng.binomial(n_b, 0.33))
            cases.append({"kind": "proportion", "n_a": n_a, "sum_a": x_a, "n_b": n_b, "sum_b": x_b,
                          "alpha": alpha, "horizon": horizon})
            ours.append(proportion_difference(n_a, x_a, n_b, x_b, alpha=alpha, rho2=rho2))
    theirs = gbstats_sequential(cases)
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.estimate == pytest.approx(ref["estimate"], abs=1e-9)
        assert mine.lower == pytest.approx(ref["lower"], abs=1e-6)
        assert mine.upper == pytest.approx(ref["upper"], abs=1e-6)
        assert mine.p_value == pytest.approx(ref["p_value"], abs=1e-6)


@pytest.mark.timeout(1200)  # the first run builds gbstats' virtualenv
def test_regression_adjusted_interval_equals_gbstats_cuped() -> None:
    rng = np.random.default_rng(6)
    cases, ours = [], []
    for alpha, horizon in ((0.05, 2000.0), (0.01, 10000.0), (0.1, 800.0)):
        n_a, n_b = int(rng.integers(100, 3000)), int(rng.integers(100, 3000))
        x_a, x_b = rng.normal(5, 2, n_a), rng.normal(5, 2, n_b)
        y_a = 1.0 + 0.7 * x_a + rng.normal(0, 1, n_a)
        y_b = 1.2 + 0.7 * x_b + rng.normal(0, 1.2, n_b)
        case: dict[str, object] = {"kind": "cuped", "alpha": alpha, "horizon": horizon}
        for s, x, y in (("a", x_a, y_a), ("b", x_b, y_b)):
            case |= {f"n_{s}": len(y), f"sum_{s}": float(y.sum()), f"ss_{s}": float((y * y).sum()),
                     f"xsum_{s}": float(x.sum()), f"xss_{s}": float((x * x).sum()), f"xy_{s}": float((x * y).sum())}
        cases.append(case)
        ours.append(cuped_difference(y_a, x_a, y_b, x_b, alpha=alpha, rho2=planned_mixing_variance(alpha, horizon)))
    for mine, ref in zip(ours, gbstats_sequential(cases), strict=True):
        assert mine.estimate == pytest.approx(ref["estimate"], abs=1e-9)
        assert (mine.lower, mine.upper) == pytest.approx((ref["lower"], ref["upper"]), abs=1e-6)
        assert mine.p_value == pytest.approx(ref["p_value"], abs=1e-6)


def test_fixed_n_welch_test_agrees_with_scipy() -> None:
    rng = np.random.default_rng(9)
    for _ in range(10):
        a, b = rng.normal(0, 1, int(rng.integers(5, 300))), rng.normal(0.2, 2, int(rng.integers(5, 300)))
        mine = welch_test(len(a), a.mean(), a.var(ddof=1), len(b), b.mean(), b.var(ddof=1))
        ref = stats.ttest_ind(b, a, equal_var=False)
        assert mine.statistic == pytest.approx(ref.statistic, rel=1e-10)
        assert mine.p_value == pytest.approx(ref.pvalue, rel=1e-8)
        ci = ref.confidence_interval(0.95)
        assert (mine.lower, mine.upper) == pytest.approx((ci.low, ci.high), rel=1e-8)
    z = rng.normal(size=20)
    assert z_test_p(z, np.ones(20)) == pytest.approx(2 * stats.norm.sf(np.abs(z)))


def test_the_mixing_variance_can_be_fitted_from_past_experiments() -> None:
    rng = np.random.default_rng(13)
    tau2, unit_variance, n = 0.01, 4.0, 2000  # past true effects ~ N(0, 0.1²); each estimated from 2,000 units
    sampling = np.full(400, unit_variance / n)
    effects = rng.normal(0, math.sqrt(tau2), 400) + rng.normal(0, np.sqrt(sampling))
    assert fitted_mixing_variance(effects, sampling, unit_variance) == pytest.approx(tau2 / unit_variance, rel=0.2)
    with pytest.raises(EvaluationError, match="no larger than their noise"):
        fitted_mixing_variance(np.zeros(10), np.full(10, 0.1), 1.0)
    with pytest.raises(EvaluationError, match="at least three past effects"):
        fitted_mixing_variance([0.1], [0.01], 1.0)


def test_small_or_degenerate_arms_give_no_evidence_and_bad_tuning_is_refused() -> None:
    rho2 = planned_mixing_variance(ALPHA, 1000)
    iv = mean_difference(1, 0.0, 0.0, 10, 1.0, 1.0, alpha=ALPHA, rho2=rho2)
    assert (iv.lower, iv.upper, iv.e_value) == (-math.inf, math.inf, 1.0)
    with pytest.raises(EvaluationError, match="mixing variance"):
        mean_difference(10, 0.0, 1.0, 10, 1.0, 1.0, alpha=ALPHA, rho2=0.0)
    with pytest.raises(EvaluationError, match="horizon"):
        planned_mixing_variance(ALPHA, 0)
    with pytest.raises(EvaluationError, match="event counts"):
        proportion_difference(10, 11, 10, 1, alpha=ALPHA, rho2=rho2)
    with pytest.raises(EvaluationError, match="covariate"):
        cuped_difference([1.0, 2.0], [1.0], [1.0, 2.0], [1.0, 2.0], alpha=ALPHA, rho2=rho2)
