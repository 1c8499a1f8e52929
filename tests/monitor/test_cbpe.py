"""The label-free estimate: exact against brute force and Monte Carlo, within 0.03 of the realised AUROC under
covariate shift, and flagged by the check under concept drift (seeded)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from kawa.monitor.cbpe import check, estimate, expected_auroc, fit_isotonic
from kawa.monitor.errors import MonitorError
from kawa.monitor.performance import auroc

COEF = np.array([1.2, -0.8, 0.5])


def world(
    rng: np.random.Generator, n: int, shift: float = 0.0, scale: float = 1.0, coef: np.ndarray = COEF
) -> tuple[np.ndarray, np.ndarray]:
    """Features N(shift, scale²), labels from a logistic P(y|x) with ``coef``."""
    x = rng.normal(shift, scale, size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ coef - 1.0)))).astype(int)
    return x, y


def test_expected_auroc_equals_the_brute_force_double_sum() -> None:
    rng = np.random.default_rng(1)
    p = np.round(rng.beta(2, 5, 60), 2)  # ties
    pos, neg = p[:, None], 1 - p[None, :]
    order = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    w = pos * neg
    np.fill_diagonal(w, 0.0)
    assert expected_auroc(p) == pytest.approx(float((w * order).sum() / w.sum()), abs=1e-12)


def test_the_estimate_matches_monte_carlo_labels_from_calibrated_scores() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(1.5, 4, 800)
    est = estimate(p, threshold=0.3)
    labels = rng.random((2000, p.size)) < p
    aucs = [auroc(y.astype(int), p) for y in labels[:300]]
    assert np.mean(aucs) == pytest.approx(est.auroc, abs=0.003)
    assert est.auroc_band[0] < np.quantile(aucs, 0.5) < est.auroc_band[1]
    inside = np.mean([est.auroc_band[0] <= a <= est.auroc_band[1] for a in aucs])
    assert 0.92 <= inside <= 0.98
    called = p >= 0.3
    assert est.tp == pytest.approx((labels & called).sum(axis=1).mean(), rel=0.01)
    assert est.fn == pytest.approx((labels & ~called).sum(axis=1).mean(), rel=0.01)
    assert est.tp + est.fp + est.fn + est.tn == pytest.approx(p.size)
    assert est.brier == pytest.approx(np.mean((labels - p) ** 2), rel=0.01)
    assert est.assumes_no_concept_drift is True


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_under_covariate_shift_the_estimate_is_within_003_and_not_flagged(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xr, yr = world(rng, 5000)
    model = LogisticRegression().fit(xr, yr)
    xl, yl = world(rng, 5000, shift=0.8, scale=0.6)  # the inputs move and narrow; P(y|x) does not
    p = model.predict_proba(xl)[:, 1]
    est = estimate(p, threshold=0.5)
    result = check(est, yl, p)
    assert abs(result.gap) < 0.03, result
    assert not result.flagged
    assert abs(auroc(yr, model.predict_proba(xr)[:, 1]) - result.realised_auroc) > 0.05  # the shift moved AUROC
    assert abs(result.realised_sensitivity - result.estimated_sensitivity) < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_under_concept_drift_the_check_flags_the_gap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xr, yr = world(rng, 5000)
    model = LogisticRegression().fit(xr, yr)
    xl, yl = world(rng, 5000, coef=np.array([0.3, -0.8, 0.5]))  # the first feature matters less now
    p = model.predict_proba(xl)[:, 1]
    result = check(estimate(p), yl, p)
    assert result.gap < -0.03 and result.flagged and not result.within_band


def test_a_small_cohort_gap_within_sampling_error_is_not_flagged() -> None:
    rng = np.random.default_rng(5)
    p = rng.beta(2, 3, 40)
    est = estimate(p)
    flagged = [check(est, (rng.random(p.size) < p).astype(int), p).flagged for _ in range(200)]
    assert sum(flagged) <= 12  # about 5 % fall outside a 95 % band by chance


def test_isotonic_calibration_equals_sklearn_on_the_reference() -> None:
    rng = np.random.default_rng(3)
    s = np.round(rng.normal(size=500), 2)
    y = (rng.random(500) < 1 / (1 + np.exp(-2 * s))).astype(int)
    cal = fit_isotonic(s, y)
    assert cal.apply(s) == pytest.approx(IsotonicRegression().fit_transform(s, y), abs=1e-12)
    assert np.all(np.diff(cal.apply(np.linspace(-4, 4, 50))) >= 0)
    assert cal.apply([-99.0])[0] == cal.values[0] and cal.apply([99.0])[0] == cal.values[-1]


def test_bad_input_is_refused() -> None:
    with pytest.raises(MonitorError, match="probabilities"):
        estimate([0.2, 1.3])
    with pytest.raises(MonitorError, match="cohort it was made for"):
        check(estimate([0.2, 0.4]), [0, 1, 1], [0.2, 0.4, 0.5])
    assert np.isnan(expected_auroc([0.5]))
