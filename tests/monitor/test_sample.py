"""Exact mode: raw-value samples give KS and Wasserstein equal to scipy's on the raw data, the calibration's
simulated nulls equal scipy on every resampled window, window reservoirs stay bounded (and uniform beyond their
cap), and a profile keeps its sample through JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp, kstest, wasserstein_distance

from kawa.monitor import MonitorError, NumericSketch, Profile, Windows, WindowState, build_profile, compare
from kawa.monitor.sample import Sample, ks_null, wasserstein_null
from kawa.monitor.status import drift_row


def _values(rng: np.random.Generator, n: int, shift: float, ties: bool) -> np.ndarray:  # type: ignore[type-arg]
    x = rng.normal(shift, 1 + shift / 2, size=n)
    return np.round(x * 4) / 4 if ties else x


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 3000), st.integers(1, 800), st.floats(0, 1.5), st.booleans())
def test_exact_statistics_equal_scipy_on_the_raw_values(
    seed: int, n_ref: int, n_live: int, shift: float, ties: bool
) -> None:
    rng = np.random.default_rng(seed)
    ref_values = _values(rng, n_ref, 0.0, ties)
    live_values = _values(rng, n_live, shift, ties)
    profile = build_profile({"x": ref_values}, samples=True)
    ref = profile.features["x"]
    live = profile.empty().add({"x": live_values}).features["x"]
    d = compare(ref, live)
    assert d.exact
    ks = ks_2samp(ref_values, live_values, method="asymp")
    assert d.ks == pytest.approx(ks.statistic, abs=1e-12)
    assert d.ks_p == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
    w = wasserstein_distance(ref_values, live_values)
    assert d.wasserstein == pytest.approx(w, rel=1e-9, abs=1e-12)
    # Evidently 0.7: stats.wasserstein_distance(reference, current) / max(np.std(reference), 0.001)
    assert d.normed_wasserstein == pytest.approx(w / max(float(np.std(ref_values)), 0.001), rel=1e-9, abs=1e-12)
    row = drift_row(ref, live)  # what the monitor publishes for a window
    assert row["exact"] and row["ks"] == d.ks and row["normed_wasserstein"] == d.normed_wasserstein


def test_without_samples_the_statistics_stay_binned() -> None:
    rng = np.random.default_rng(3)
    profile = build_profile({"x": rng.normal(size=2000)})
    live = profile.empty().add({"x": rng.normal(0.3, size=300)})
    d = compare(profile.features["x"], live.features["x"])
    assert not d.exact and d.ks is not None
    assert "sample" not in json.loads(profile.to_json())["features"]["x"]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 400), st.integers(1, 60), st.booleans())
def test_simulated_nulls_equal_scipy_on_each_resampled_window(seed: int, n_ref: int, m: int, ties: bool) -> None:
    ref = np.sort(_values(np.random.default_rng(seed), n_ref, 0.0, ties))
    ks = ks_null(ref, m, 30, np.random.default_rng(seed), chunk=7)
    w = wasserstein_null(ref, m, 30, np.random.default_rng(seed), chunk=7)
    rng = np.random.default_rng(seed)  # the same draws, chunk by chunk, as the nulls made them
    windows = np.vstack([np.sort(rng.integers(0, n_ref, size=(min(7, 30 - lo), m)), axis=1) for lo in range(0, 30, 7)])
    with np.errstate(divide="ignore"):  # scipy's p-value (unused here) divides by zero at one value a side
        expected = [ks_2samp(ref, ref[i], method="asymp").statistic for i in windows]
    assert ks == pytest.approx(expected, abs=1e-12)
    assert w == pytest.approx([wasserstein_distance(ref, ref[i]) for i in windows], rel=1e-9, abs=1e-12)


def test_a_reservoir_is_bounded_uniform_and_independent_of_batching() -> None:
    stream = np.random.default_rng(4).permutation(1_000_000).astype(np.float64)
    sample = Sample.empty(1000)
    for lo in range(0, stream.size, 10_000):
        sample = sample.add(stream[lo : lo + 10_000])
    assert (sample.size, sample.seen, sample.nbytes) == (1000, 1_000_000, 16_000)
    assert not sample.complete and np.all(np.diff(sample.values) > 0)
    assert kstest(sample.values / 1_000_000, "uniform").pvalue > 1e-3  # a uniform subsample of the stream
    assert Sample.of(stream, 1000) == sample  # one batch or a hundred: the same sample
    small = Sample.of([3.0, np.nan, 1.0, 2.0], 10)
    assert small.complete and small.values.tolist() == [1.0, 2.0, 3.0] and small.seen == 3


def test_sliding_windows_keep_every_value_under_the_cap_and_a_bounded_reservoir_beyond() -> None:
    rng = np.random.default_rng(5)
    profile = build_profile({"x": rng.normal(size=5000)}, samples=True, sample_cap=2000)
    spec = Windows(profile, pane=10.0, panes=4, sample_cap=500)
    state, closed = WindowState(), []
    for pane in range(12):
        per_pane = 100 if pane < 6 else 1000  # windows of 400 records, then of 4,000
        times = pane * 10.0 + np.linspace(0, 9.9, per_pane)
        state = spec.add(state, times, {"x": rng.normal(size=per_pane)})
        state, out = spec.advance(state, (pane + 1) * 10.0)
        closed += out
        held = sum(p.features["x"].sample.nbytes for _, p in state.ring)  # type: ignore[union-attr]
        assert held <= 4 * 500 * 16  # the ring of panes: at most panes x cap values
    small, big = closed[4].profile.features["x"], closed[-1].profile.features["x"]
    assert isinstance(small, NumericSketch) and isinstance(big, NumericSketch)
    assert small.sample is not None and small.sample.complete and small.sample.size == 400 == small.observed
    assert big.sample is not None and big.sample.size == 500 and big.sample.seen == 4000 == big.observed


def test_a_profile_round_trips_with_its_sample() -> None:
    rng = np.random.default_rng(6)
    cols = {"x": rng.normal(size=5000), "y": np.where(rng.uniform(size=5000) < 0.1, np.nan, rng.exponential(size=5000))}
    profile = build_profile({**cols, "c": rng.choice(["a", "b"], size=5000)}, score=rng.uniform(size=5000),  # type: ignore[dict-item]
                            categorical=["c"], samples=True, sample_cap=1000)  # fmt: skip
    x = profile.features["x"]
    assert isinstance(x, NumericSketch) and x.sample is not None and x.sample.size == 1000 and x.sample.seen == 5000
    assert kstest(x.sample.values, cols["x"]).pvalue > 1e-3  # a uniform subsample of the reference
    y = profile.features["y"]
    assert isinstance(y, NumericSketch) and y.sample is not None and not np.isnan(y.sample.values).any()
    back = Profile.from_json(profile.to_json())
    assert back == profile  # every sketch, samples included (bit for bit)
    assert build_profile(cols, samples=True, sample_cap=1000).features["x"] == x  # deterministic
    doc = json.loads(profile.to_json())
    doc["features"]["x"]["sample"]["values_f8"] = doc["features"]["x"]["sample"]["values_f8"][::-1]
    with pytest.raises(MonitorError):
        Profile.from_json(json.dumps(doc))


def test_a_windows_reservoir_does_not_depend_on_the_batching() -> None:
    rng = np.random.default_rng(7)
    profile = build_profile({"x": rng.normal(size=2000)}, samples=True)
    spec = Windows(profile, pane=10.0, panes=2, sample_cap=300)
    times = np.sort(rng.uniform(0, 40, size=3000))
    values = rng.normal(size=3000)

    def windows(cuts: list[int]) -> list[Profile]:
        state, out = WindowState(), []
        for lo, hi in zip([0, *cuts], [*cuts, 3000], strict=True):
            state = spec.add(state, times[lo:hi], {"x": values[lo:hi]})
        _, closed = spec.advance(state, 50.0)
        out += [w.profile for w in closed]
        return out

    whole = windows([])
    assert len(whole) == 4 and all(w.features["x"].sample.size == 300 for w in whole)  # type: ignore[union-attr]
    assert windows([1, 17, 500, 2999]) == whole == windows(list(range(100, 3000, 100)))
