"""Drift statistics equal scipy's (and the textbook formulas) on the same binned data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import binom, chi2_contingency, ks_2samp, wasserstein_distance

from kawa.monitor import LayoutMismatch, build_profile, categorical_reference, compare, numeric_reference
from kawa.monitor.drift import PSI_FLOOR, missing_shift, psi


def _pair(seed: int, shift: float, n_live: int) -> tuple:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    ref = numeric_reference(rng.normal(size=4000), bins=12)
    live_values = rng.normal(shift, 1 + shift / 2, size=n_live)
    return ref, ref.empty().add(live_values)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0, 1.5), st.integers(50, 3000))
def test_numeric_statistics_equal_scipy_on_the_binned_data(seed: int, shift: float, n_live: int) -> None:
    ref, live = _pair(seed, shift, n_live)
    d = compare(ref, live)
    pos = np.asarray(ref.positions)
    r, q = np.asarray(ref.counts), np.asarray(live.counts)
    ks = ks_2samp(np.repeat(pos, r), np.repeat(pos, q), method="asymp")
    assert d.ks == pytest.approx(ks.statistic, abs=1e-12)
    assert d.ks_p == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
    w = wasserstein_distance(pos, pos, u_weights=r, v_weights=q)
    assert d.wasserstein == pytest.approx(w, rel=1e-9, abs=1e-12)
    assert d.normed_wasserstein == pytest.approx(w / ref.scale, rel=1e-9, abs=1e-12)
    assert d.js == pytest.approx(jensenshannon(r, q, base=2), abs=1e-9)
    nonempty = (r + q) > 0
    chi = chi2_contingency(np.vstack([r, q])[:, nonempty], correction=False)
    assert d.chi2 == pytest.approx(chi.statistic, rel=1e-9)
    assert d.chi2_p == pytest.approx(chi.pvalue, rel=1e-6, abs=1e-300)
    assert d.cramers_v == pytest.approx(math.sqrt(chi.statistic / (r.sum() + q.sum())), rel=1e-9)
    assert d.psi == pytest.approx(_textbook_psi(r, q), rel=1e-9, abs=1e-12)


def _textbook_psi(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:  # type: ignore[type-arg]
    total = 0.0
    for e_n, a_n in zip(expected_counts, actual_counts, strict=True):
        e = max(e_n / expected_counts.sum(), PSI_FLOOR)
        a = max(a_n / actual_counts.sum(), PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def test_categorical_statistics_equal_scipy_and_count_unseen_categories() -> None:
    rng = np.random.default_rng(5)
    ref = categorical_reference([*list(rng.choice(["a", "b", "c", "d"], p=[0.4, 0.3, 0.2, 0.1], size=5000)), "e"])
    live = ref.empty().add(list(rng.choice(["a", "b", "c", "x"], p=[0.3, 0.3, 0.3, 0.1], size=800)))
    d = compare(ref, live)
    r, q = np.asarray(ref.counts), np.asarray(live.counts)
    chi = chi2_contingency(np.vstack([r, q])[:, (r + q) > 0], correction=False)
    assert d.chi2 == pytest.approx(chi.statistic) and d.chi2_p == pytest.approx(chi.pvalue, abs=1e-300)
    assert d.js == pytest.approx(jensenshannon(r, q, base=2))
    assert d.psi == pytest.approx(_textbook_psi(r, q))
    assert d.ks is None and d.wasserstein is None
    assert d.unseen is not None
    assert d.unseen.share == pytest.approx(live.counts[-1] / 800)
    assert d.unseen.expected_rate == pytest.approx(1 / 5001)  # Good-Turing: one category ("e") seen once
    assert d.unseen.p_value == pytest.approx(binom.sf(live.counts[-1] - 1, 800, 1 / 5001))
    assert d.unseen.p_value < 1e-12


def test_identical_distributions_have_no_drift() -> None:
    ref = numeric_reference(np.arange(1000.0))
    d = compare(ref, ref)
    assert d.psi == 0 and d.js == 0 and d.ks == 0 and d.wasserstein == 0 and d.chi2 == 0


def test_psi_grows_with_the_shift_and_reads_like_its_rule_of_thumb() -> None:
    values = [compare(*_pair(1, s, 20_000)).psi for s in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values)
    assert values[0] < 0.01 and values[2] > 0.1 and values[3] > 0.25


def test_missing_share_shift_is_a_two_proportion_z_test() -> None:
    prof = build_profile({"x": [1.0, 2.0, None, 4.0] * 250})
    ref = prof.features["x"]
    live = ref.empty().add([None] * 120 + [1.0] * 280)
    ms = missing_shift(ref, live)
    p1, p2 = 250 / 1000, 120 / 400
    pooled = 370 / 1400
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / 1000 + 1 / 400))
    assert ms.reference_share == p1 and ms.live_share == p2 and ms.shift == pytest.approx(0.05)
    assert ms.z == pytest.approx(z) and ms.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))


def test_statistics_are_vectorised_over_windows() -> None:
    ref, live = _pair(2, 0.3, 500)
    batch = np.vstack([live.counts, ref.counts])
    assert psi(ref.counts, batch) == pytest.approx([compare(ref, live).psi, 0.0])


def test_windows_binned_by_another_profile_are_refused() -> None:
    a, b = numeric_reference(np.arange(10.0)), numeric_reference(np.arange(20.0))
    with pytest.raises(LayoutMismatch, match="reference profile"):
        compare(a, b)
