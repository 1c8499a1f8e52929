"""The windowed detector in exact mode (KS and Wasserstein on raw values): seeded simulations of its false-alarm
rate against fresh stationary windows, a planted shift alerted with the exact statistic as evidence, and clear
errors when the windows keep no (or too few) raw values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import binom, ks_2samp, wasserstein_distance

from kawa.monitor import MonitorError, NumericSketch, Profile, Windows, WindowState, build_profile, calibrate
from kawa.monitor.calibrate import Statistic

F = 4
WINDOW = 100


def _reference(seed: int = 20, n: int = 10_000) -> tuple[Profile, np.ndarray]:  # type: ignore[type-arg]
    x = np.random.default_rng(seed).normal(size=(n, F))
    return build_profile({f"x{i}": x[:, i] for i in range(F)}, samples=True), x


def _window(ref: Profile, rng: np.random.Generator, shift: float = 0.0, n: int = WINDOW) -> Profile:
    x = rng.normal(size=(n, F))
    x[:, 0] += shift
    return ref.empty(WINDOW).add({f"x{i}": x[:, i] for i in range(F)})


@pytest.fixture(scope="module")
def reference() -> Profile:
    return _reference()[0]


@pytest.mark.parametrize("statistic", ["ks", "wasserstein"])
def test_stationary_windows_alarm_near_the_budget_and_not_above(reference: Profile, statistic: Statistic) -> None:
    """ARL0 = 20 windows, Bonferroni over 8 tests, significance alone: over 1,000 fresh N(0,1) windows of 100
    (the reference sample is 100 times that) the alarm count lies between a quarter of the budget and the
    budget, so the exact-mode null is neither anti-conservative nor vacuous."""
    det = calibrate(
        reference, window_size=WINDOW, arl0=20, numeric=statistic, correction="bonferroni",
        min_effect={statistic: 0.0, "missing": 0.0}, seed=21,
    )  # fmt: skip
    assert all(t.exact and t.n_live == WINDOW for t in det.tests if t.test == "distribution")
    rng = np.random.default_rng(22)
    k = 1000
    alarms = sum(any(f.alarm for f in det.evaluate(_window(reference, rng))) for _ in range(k))
    assert binom.ppf(0.001, k, 1 / 20 / 4) <= alarms <= binom.ppf(0.999, k, 1 / 20), alarms


def test_a_planted_shift_alarms_with_the_exact_statistic_as_evidence() -> None:
    ref, x = _reference()
    det = calibrate(ref, window_size=WINDOW, arl0=1000, numeric="ks", seed=23)
    rng = np.random.default_rng(24)
    live = rng.normal(size=(WINDOW, F))
    live[:, 0] += 0.75
    findings = det.evaluate(ref.empty(WINDOW).add({f"x{i}": live[:, i] for i in range(F)}))
    alarms = [f for f in findings if f.alarm]
    assert [(f.feature, f.statistic) for f in alarms] == [("x0", "ks")]
    assert alarms[0].value == pytest.approx(ks_2samp(x[:, 0], live[:, 0]).statistic, abs=1e-12)
    assert (alarms[0].n_reference, alarms[0].n_live) == (10_000, WINDOW)
    wd = calibrate(ref, window_size=WINDOW, arl0=1000, numeric="wasserstein", seed=23, replicates=2000)
    found = {f.feature: f for f in wd.evaluate(ref.empty(WINDOW).add({f"x{i}": live[:, i] for i in range(F)}))
             if f.test == "distribution"}  # fmt: skip
    expected = wasserstein_distance(x[:, 0], live[:, 0]) / np.std(x[:, 0])
    assert found["x0"].value == pytest.approx(expected, rel=1e-9)


def test_windows_without_enough_raw_values_are_refused(reference: Profile) -> None:
    det = calibrate(reference, window_size=WINDOW, arl0=100, numeric="ks", seed=25, replicates=2000)
    window = _window(reference, np.random.default_rng(26))
    bare = Profile({n: dataclasses.replace(s, sample=None) for n, s in window.features.items()  # type: ignore[type-var]
                    if isinstance(s, NumericSketch)}, None, window.n)  # fmt: skip
    with pytest.raises(MonitorError, match="keeps none"):
        det.evaluate(bare)
    spec = Windows(reference, pane=10.0, sample_cap=WINDOW // 2)
    cols = {f"x{i}": np.zeros(WINDOW) for i in range(F)}
    state = spec.add(WindowState(), np.linspace(0, 9, WINDOW), cols)
    _, (closed,) = spec.advance(state, 10.0)
    with pytest.raises(MonitorError, match="raise the window sample cap"):
        det.evaluate(closed.profile)
