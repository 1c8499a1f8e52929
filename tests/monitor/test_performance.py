"""Matured-cohort metrics: values equal sklearn's, DeLong's variance equals the pairwise computation, and the
intervals cover at their level in seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from sklearn import calibration
from sklearn import metrics as skm

from kawa.events.ref import EventRef
from kawa.monitor.errors import MonitorError
from kawa.monitor.join import Matured
from kawa.monitor.performance import (
    at_threshold,
    auprc,
    auroc,
    bootstrap_auprc,
    brier,
    cohorts,
    delong,
    ece,
    evaluate,
    precision_at_k,
    wilson,
)
from kawa.monitor.records import DecisionRecord


def sample(seed: int, n: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y - 1)))
    return y, np.round(p, 1) if ties else p


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False), (3, True)])
def test_values_equal_sklearn(seed: int, ties: bool) -> None:
    y, p = sample(seed, ties=ties)
    assert auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert auprc(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert brier(y, p).estimate == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
    sens, ppv = at_threshold(y, p, 0.4)
    assert sens.estimate == pytest.approx(skm.recall_score(y, p >= 0.4))
    assert ppv.estimate == pytest.approx(skm.precision_score(y, p >= 0.4))
    # ECE from sklearn's calibration curve and numpy's bin counts
    true, pred = calibration.calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.histogram(p, bins=np.linspace(0, 1, 11))[0]
    counts = counts[counts > 0]
    if not ties:  # with ties on bin edges sklearn puts a value of 0.3 in the lower bin, ECE's bins the upper
        assert ece(y, p) == pytest.approx(float(np.sum(counts * np.abs(true - pred)) / y.size), abs=1e-12)
    # precision@k against a plain sort
    top = sorted(range(y.size), key=lambda i: -p[i])[:25]
    assert precision_at_k(y, p, 25).estimate == pytest.approx(sum(y[i] for i in top) / 25)


def test_delong_variance_equals_the_pairwise_kernel() -> None:
    y, p = sample(5, n=120, ties=True)
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    se = math.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)
    got = delong(y, p)
    assert got.estimate == pytest.approx(psi.mean(), abs=1e-12)
    assert got.high - got.estimate == pytest.approx(stats.norm.ppf(0.975) * se, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_the_auprc_bootstrap_equals_sklearn_on_the_same_resamples(ties: bool) -> None:
    y, p = sample(4, n=150, ties=ties)
    got = bootstrap_auprc(y, p, draws=60, seed=3)
    idx = np.random.default_rng(3).integers(0, y.size, (60, y.size))
    values = [skm.average_precision_score(y[i], p[i]) for i in idx if y[i].sum() > 0]
    low, high = np.quantile(values, [0.025, 0.975])
    assert got.estimate == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)


def test_the_auprc_bootstrap_interval_covers_the_true_auprc() -> None:
    # binormal, prevalence 0.4: AUPRC = ∫ φ(t-1) · π S₁(t) / (π S₁(t) + (1-π) S₀(t)) dt, S the survival functions
    pi = 0.4
    curve = lambda t: (  # noqa: E731
        stats.norm.pdf(t - 1) * pi * stats.norm.sf(t - 1) / (pi * stats.norm.sf(t - 1) + (1 - pi) * stats.norm.sf(t))
    )
    truth = integrate.quad(curve, -12, 12)[0]
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(80, int), np.zeros(120, int)]
    covered = sum(
        bootstrap_auprc(y, np.r_[rng.normal(1, 1, 80), rng.normal(0, 1, 120)], seed=i).covers(truth) for i in range(400)
    )
    assert 0.93 <= covered / 400 <= 0.97, covered


def test_wilson_equals_scipy() -> None:
    for k, n in [(0, 10), (3, 10), (10, 10), (37, 250)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
        got = wilson(k, n, 0.9)
        assert (got.low, got.high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert math.isnan(wilson(0, 0).estimate)


def test_the_delong_interval_covers_the_true_auroc_at_its_level() -> None:
    # binormal scores: negatives N(0,1), positives N(mu,1), AUROC = Φ(mu / √2)
    mu, draws = 1.0, 400
    truth = stats.norm.cdf(mu / math.sqrt(2))
    rng = np.random.default_rng(2026)
    covered = 0
    for _ in range(draws):
        y = np.r_[np.ones(80, int), np.zeros(120, int)]
        s = np.r_[rng.normal(mu, 1, 80), rng.normal(0, 1, 120)]
        covered += delong(y, s).covers(truth)
    assert 0.93 <= covered / draws <= 0.97, covered


def test_wilson_intervals_cover_at_their_level() -> None:
    n, p = 200, 0.3
    hits = np.random.default_rng(11).binomial(n, p, size=400)
    covered = sum(wilson(int(k), n).covers(p) for k in hits)
    assert 0.93 <= covered / 400 <= 0.97, covered
    # and exactly, summing the binomial probabilities of the counts whose interval covers p
    exact = sum(stats.binom.pmf(k, n, p) for k in range(n + 1) if wilson(k, n).covers(p))
    assert 0.93 <= exact <= 0.97


def test_undefined_metrics_are_nan_and_bad_input_is_refused() -> None:
    assert math.isnan(auroc([1, 1], [0.2, 0.3])) and math.isnan(auprc([0, 0], [0.2, 0.3]))
    assert math.isnan(bootstrap_auprc([0, 0], [0.2, 0.3]).low)
    m = evaluate(np.array([0, 0]), np.array([0.1, 0.2]), threshold=0.5, k=5)
    assert math.isnan(m.ppv.estimate) and math.isnan(m.sensitivity.estimate) and m.k == 2
    assert m.brier.estimate == pytest.approx((0.01 + 0.04) / 2)
    with pytest.raises(MonitorError, match="0 or 1"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(MonitorError, match="one length"):
        auroc([0, 1], [0.1])
    with pytest.raises(MonitorError, match="probabilities"):
        ece([0, 1], [0.1, 1.5])


def test_cohorts_group_by_prediction_time_version_and_arm() -> None:
    y, p = sample(9, n=400)
    matured = []
    for i in range(400):
        d = DecisionRecord(
            EventRef("s", str(i)),
            "sepsis",
            1 + i % 2,
            f"p{i}",
            float(i),
            score=float(p[i]),
            arm="A" if i < 200 else None,
        )
        matured.append(Matured(d, int(y[i]), None, observed=bool(y[i]) or i % 3 == 0, matured_at=i + 10.0))
    out = cohorts(matured, bucket=100.0, threshold=0.4, k=10)
    assert [(c.version, c.arm, c.start) for c in out] == [
        (v, arm, start) for v in (1, 2) for arm, start in [("A", 0.0), ("A", 100.0), (None, 200.0), (None, 300.0)]
    ]
    first = out[0]
    idx = [i for i in range(100) if i % 2 == 0]
    assert first.metrics.n == 50 and first.end == 100.0
    assert first.metrics.auroc.estimate == pytest.approx(skm.roc_auc_score(y[idx], p[idx]))
    assert first.metrics.auprc.estimate == pytest.approx(skm.average_precision_score(y[idx], p[idx]))
    assert first.metrics.auprc.low < first.metrics.auprc.estimate < first.metrics.auprc.high
    assert first.assumed_negative == sum(1 for i in idx if not y[i] and i % 3 != 0)
