"""SRM gate (seeded simulations), multiple-testing corrections (BY equals scipy) and maturity-aware accrual."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from kawa.evaluation.accrual import matured
from kawa.evaluation.errors import EvaluationError
from kawa.evaluation.multiple import benjamini_yekutieli, bonferroni
from kawa.evaluation.srm import srm_log_bayes_factor, srm_p_value


def _srm_runs(rng: np.random.Generator, share_b: float, runs: int, looks: int, batch: int) -> np.ndarray:
    """Running-minimum always-valid SRM p-value at the last look of each run (planned split 50/50)."""
    b = np.cumsum(rng.binomial(batch, share_b, (runs, looks)), axis=1)
    a = np.arange(1, looks + 1) * batch - b
    log_bf = srm_log_bayes_factor(np.stack([a, b], axis=-1), [0.5, 0.5])
    p: np.ndarray = np.minimum(1.0, np.exp(-np.max(log_bf, axis=1)))
    return p


def test_srm_detects_a_48_52_split() -> None:
    p = _srm_runs(np.random.default_rng(1), 0.52, runs=500, looks=40, batch=1000)
    assert np.mean(p <= 0.001) >= 0.95


def test_srm_passes_a_50_50_split_under_continuous_looks() -> None:
    p = _srm_runs(np.random.default_rng(2), 0.50, runs=2000, looks=40, batch=1000)
    assert np.mean(p <= 0.05) <= 0.05 + 0.01
    assert np.mean(p <= 0.001) <= 0.005


def test_srm_handles_many_arms_and_refuses_bad_input() -> None:
    assert srm_p_value([3333, 3334, 3333], [1 / 3, 1 / 3, 1 / 3]) == 1.0
    assert srm_p_value([990, 1010, 8000], [0.1, 0.1, 0.8]) > 0.05
    assert srm_p_value([500, 1500, 8000], [0.1, 0.1, 0.8]) < 1e-6
    with pytest.raises(EvaluationError, match="one count per arm"):
        srm_p_value([1, 2], [0.2, 0.3, 0.5])
    with pytest.raises(EvaluationError, match="planned split"):
        srm_p_value([1, 2], [0.2, 0.3])


def test_benjamini_yekutieli_equals_scipy_and_bonferroni_is_m_times_p() -> None:
    rng = np.random.default_rng(4)
    for m in (1, 3, 10, 50):
        p = np.concatenate([rng.uniform(size=m - m // 3), rng.uniform(0, 0.002, m // 3)])
        by = benjamini_yekutieli(p.tolist(), 0.05)
        assert by.adjusted == pytest.approx(tuple(stats.false_discovery_control(p, method="by")), rel=1e-12)
        assert by.rejected == tuple(bool(v) for v in np.asarray(by.adjusted) <= 0.05)
        bf = bonferroni(p.tolist(), 0.05)
        assert bf.adjusted == pytest.approx(tuple(np.minimum(1, p * m)))
    with pytest.raises(EvaluationError, match="between 0 and 1"):
        bonferroni([0.5, 1.5], 0.05)


def test_a_unit_counts_only_once_its_outcome_window_has_closed() -> None:
    day = 86400.0
    decided = [0.0, 0.5 * day, 1.0 * day, 2.0 * day, 2.0 * day]
    outcome = [0.2 * day, math.nan, 1.5 * day, 2.5 * day, math.nan]
    acc = matured(decided, outcome, look_time=2.2 * day, maturity_window_s=day)
    # unit 3 and 4 are younger than the window: their "no event yet" is not "no event"
    assert acc.counts.tolist() == [True, True, True, False, False]
    assert acc.event.tolist() == [True, False, True, False, False]
    assert acc.n == 3
    # an event after the window is outside the metric: unit 0's window closed at 1 day
    late = matured([0.0], [1.5 * day], look_time=3 * day, maturity_window_s=day)
    assert late.counts.tolist() == [True] and late.event.tolist() == [False]


@given(st.lists(st.tuples(st.floats(0, 1e6), st.one_of(st.none(), st.floats(0, 1e6))), min_size=1, max_size=50),
       st.floats(0, 2e6), st.floats(0, 1e6), st.floats(0, 1e6))
def test_accrual_is_monotone_in_look_time(pairs: list[tuple[float, float | None]], look: float, later: float,
                                          window: float) -> None:
    decided = [t for t, _ in pairs]
    outcome = [math.nan if o is None else t + o for t, o in pairs]
    now = matured(decided, outcome, look, window)
    after = matured(decided, outcome, look + later, window)
    assert np.all(after.counts[now.counts])  # a counted unit never stops counting
    assert np.array_equal(after.event[now.counts], now.event[now.counts])  # and its outcome never changes
    assert not np.any(now.event & ~now.counts)


def test_accrual_refuses_mismatched_or_impossible_times() -> None:
    with pytest.raises(EvaluationError, match="one outcome time"):
        matured([0.0, 1.0], [math.nan], 10.0, 1.0)
    with pytest.raises(EvaluationError, match="before its decision"):
        matured([5.0], [1.0], 10.0, 1.0)
