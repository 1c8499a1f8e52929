"""The sequential (CUSUM) drift detector: kernel against a naive recursion, calibration against simulated run
lengths, quiet on stationary streams, prompt on planted shifts, independent of how a stream is batched."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from kawa.monitor import MonitorError, Profile, build_profile
from kawa.monitor.cusum import arl, cusum_paths, drift_exponent, threshold
from kawa.monitor.sequential import (
    Mode,
    SequentialAlert,
    SequentialDetector,
    SequentialEvent,
    SequentialResolved,
    SequentialState,
    calibrate_sequential,
)

F = 20


@pytest.fixture(scope="module")
def normal_reference() -> Profile:
    rng = np.random.default_rng(1)
    return build_profile({f"x{i}": rng.normal(size=50_000) for i in range(F)})


def _naive(det: SequentialDetector, x: np.ndarray) -> tuple[list[tuple[str, int, int, str, int]], int]:  # type: ignore[type-arg]
    """The detector written out record by record in pure python: Page's recursion, reset on crossing, one alert
    per feature until ``clear_after`` quiet records resolve it. Returns (kind, feature, record, channel, change
    point) per event, and the number of crossings (one per feature and record)."""
    c = len(det.channel_feature)
    sums = [0.0] * (2 * c)  # upward CUSUMs, then downward ones
    zero = [0] * (2 * c)  # the record after which each last stood at 0
    open_: dict[int, int] = {}  # feature -> record of its last crossing
    out: list[tuple[str, int, int, str, int]] = []
    crossings = 0
    for t, row in enumerate(x.tolist(), start=1):
        for f, last in sorted(open_.items(), key=lambda kv: kv[1]):
            if last + det.clear_after < t:
                out.append(("resolved", f, last + det.clear_after, "", 0))
                del open_[f]
        crossed: dict[int, tuple[float, str, int]] = {}
        for ch in range(c):
            f = det.channel_feature[ch]
            v = row[f]
            if math.isnan(v):  # no evidence: the CUSUMs stay (and one at 0 still stands at 0 after this record)
                for j in (ch, ch + c):
                    if sums[j] == 0.0:
                        zero[j] = t
                continue
            if det.mode == "mean":
                z = (v - det.center[f]) / det.scale[f]
            else:
                b = sum(1 for e in det.edges[f] if v >= e)
                z = det.tables[ch][b]
            for j, inc in ((ch, z - det.k[ch]), (ch + c, -z - det.k[ch])):
                sums[j] = max(0.0, sums[j] + inc)
                if sums[j] == 0.0:
                    zero[j] = t
                if sums[j] > det.h[j]:
                    ratio = sums[j] / det.h[j]
                    if f not in crossed or ratio > crossed[f][0]:
                        crossed[f] = (ratio, det.channel_kind[ch], zero[j])
                    sums[j], zero[j] = 0.0, t
        crossings += len(crossed)
        for f, (_, kind, point) in sorted(crossed.items()):
            if f not in open_:
                out.append(("alert", f, t, kind, point))
            open_[f] = t
    for f, last in sorted(open_.items(), key=lambda kv: kv[1]):
        if last + det.clear_after <= len(x):
            out.append(("resolved", f, last + det.clear_after, "", 0))
    return sorted(out, key=lambda r: (r[2], r[0], r[1])), crossings


def _summary(det: SequentialDetector, events: tuple[SequentialEvent, ...]) -> list[tuple[str, int, int, str, int]]:
    out = []
    for e in events:
        if isinstance(e, SequentialAlert):
            out.append(("alert", det.features.index(e.feature), e.record, e.channel, e.change_point))
        else:
            out.append(("resolved", det.features.index(e.alert.feature), e.record, "", 0))
    return sorted(out, key=lambda r: (r[2], r[0], r[1]))


def _alerts(events: tuple[SequentialEvent, ...]) -> list[SequentialAlert]:
    return [e for e in events if isinstance(e, SequentialAlert)]


def test_the_closed_form_kernel_equals_pages_recursion() -> None:
    rng = np.random.default_rng(2)
    inc = rng.normal(-0.1, 1.0, size=(500, 3))
    start = np.array([0.0, 2.5, 7.0])
    got = cusum_paths(inc, start)
    s = start.tolist()
    for t in range(inc.shape[0]):
        s = [max(0.0, a + b) for a, b in zip(s, inc[t].tolist(), strict=True)]
        np.testing.assert_allclose(got[t], s, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["mean", "binned"])
@pytest.mark.parametrize("strength", [1.0, 3.0])
def test_alerts_equal_a_naive_record_by_record_detector(normal_reference: Profile, mode: Mode, strength: float) -> None:
    """A busy stream (small budget; shifts up, down and in spread, at 3 sigma crossing every few records across
    several blocks; missing values): every alert with its change point and every resolution, at the same record,
    and the same number of crossings, as the pure-python detector."""
    det = calibrate_sequential(
        normal_reference, arl0=300, shift=1.0, mode=mode, features=["x0", "x1", "x2"], clear_after=40
    )
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5000, 3))
    x[1000:1600, 0] += strength
    x[1800:4400, 1] -= 1.5 * strength
    x[2000:, 2] *= 1.5 + strength
    x[rng.random(size=x.shape) < 0.02] = np.nan
    state, events = det.step(SequentialState(), x)
    expected, crossings = _naive(det, x)
    assert len([e for e in expected if e[0] == "alert"]) >= 3
    assert _summary(det, events) == expected
    assert state.crossings == crossings


def test_the_drift_exponent_of_a_normal_score_is_2k() -> None:
    """For normal scores the root of E[exp(theta (s - k))] = 1 is 2k: checked on a fine discretisation of N(0,1),
    against scipy's quadrature of the normal moment generating function at the root."""
    grid = np.linspace(-9, 9, 20_001)
    p = stats.norm.pdf(grid)
    p /= p.sum()
    theta = drift_exponent(grid, p, 0.3)
    assert theta == pytest.approx(0.6, rel=1e-4)
    mgf, _ = integrate.quad(lambda s: stats.norm.pdf(s) * math.exp(theta * (s - 0.3)), -12, 12)
    assert mgf == pytest.approx(1.0, abs=1e-4)


def _run_lengths(sample: np.ndarray, k: float, h: float, paths: int, rng: np.random.Generator) -> np.ndarray:  # type: ignore[type-arg]
    """Simulated records to the first crossing of ``h`` of ``paths`` one-sided CUSUMs on scores drawn from
    ``sample`` (the scores' null distribution), vectorised over paths, 400 records at a time."""
    lengths = np.full(paths, -1)
    s = np.zeros(paths)
    done = 0
    while (lengths < 0).any():
        inc = rng.choice(sample, size=(400, paths)) - k
        path = cusum_paths(inc, s)
        over = path > h
        first = np.where(over.any(axis=0), over.argmax(axis=0), -1)
        hit = (lengths < 0) & (first >= 0)
        lengths[hit] = done + first[hit] + 1
        s = path[-1]
        done += 400
    return lengths


@pytest.mark.parametrize("scores", ["normal", "binned exponential"])
def test_the_threshold_gives_the_declared_run_length(scores: str) -> None:
    """Threshold for a run length of 400 records; 3000 simulated paths on the score's null distribution average
    within 8% of it (the standard error is about 2%)."""
    rng = np.random.default_rng(4)
    k = 0.25
    if scores == "normal":
        sample = rng.normal(size=200_000)
        theta = 2 * k
    else:
        ref = build_profile({"x": rng.exponential(size=50_000)})
        det = calibrate_sequential(ref, arl0=1e6, mode="binned")
        sketch = ref.features["x"]
        p = np.asarray(sketch.counts) / sketch.observed  # type: ignore[union-attr]
        table = np.asarray(det.tables[0])
        sample = rng.choice(table, p=p, size=200_000)
        theta = drift_exponent(table, p, k)
    h = threshold(400, k, theta)
    assert arl(h, k, theta) == pytest.approx(400)
    mean = float(_run_lengths(sample, k, h, 3000, rng).mean())
    print(f"{scores}: h={h:.3f} simulated ARL {mean:.1f} for 400")
    assert mean == pytest.approx(400, rel=0.08)


@pytest.mark.parametrize("mode", ["mean", "binned"])
def test_the_false_alarm_rate_over_all_features_is_the_budget(mode: Mode) -> None:
    """ARL0 = 1000 records over 4 features: on 400,000 stationary records the crossings number 400 expected
    (Bonferroni: at most), within 20% (the Poisson sd is 5%). Binned mode on exponential data: its calibration
    does not assume normal data."""
    rng = np.random.default_rng(5)
    draw = rng.normal if mode == "mean" else rng.exponential
    ref = build_profile({f"x{i}": draw(size=50_000) for i in range(4)})
    det = calibrate_sequential(ref, arl0=1000, mode=mode)
    state, _ = det.step(SequentialState(), draw(size=(400_000, 4)))
    print(f"{mode}: {state.crossings} crossings in 400000 records, budget 400")
    assert 320 <= state.crossings <= 440


@pytest.mark.parametrize("mode", ["mean", "binned"])
def test_a_stationary_stream_of_200k_records_raises_no_alarm(normal_reference: Profile, mode: Mode) -> None:
    det = calibrate_sequential(normal_reference, arl0=2e6, mode=mode)
    state = SequentialState()
    x = np.random.default_rng(6).normal(size=(200_000, F))
    for lo in range(0, len(x), 50_000):
        state, events = det.step(state, x[lo : lo + 50_000])
        assert events == ()
    assert state.records == 200_000 and state.crossings == 0


def test_a_planted_one_sigma_shift_is_alerted_promptly_with_its_evidence(normal_reference: Profile) -> None:
    """1 sigma up in x7 after 5,000 stationary records, 5 seeds, ARL0 = 2e6 records: alerted on x7 within 80 records
    (the CUSUM's expected delay is about 41), with a change point near the truth and the shift estimated."""
    det = calibrate_sequential(normal_reference, arl0=2e6, reference_version="m@3")
    for seed in range(5):
        x = np.random.default_rng(10 + seed).normal(size=(5_500, F))
        x[5_000:, 7] += 1.0
        times = 1000.0 + np.arange(len(x))
        _, events = det.step(SequentialState(), x, times=times)
        (alert,) = _alerts(events)
        assert (alert.feature, alert.direction, alert.channel) == ("x7", "up", "mean")
        assert 5_000 < alert.record <= 5_080, alert
        assert abs(alert.change_point - 5_000) <= 60, alert
        assert 0.5 < alert.shift < 2.0
        assert alert.value > alert.threshold == det.h[7]
        assert alert.time == times[alert.record - 1]
        assert (alert.reference_version, alert.arl0, alert.n_reference) == ("m@3", 2e6, 50_000)


def test_binned_mode_alerts_a_change_of_spread_that_keeps_the_mean(normal_reference: Profile) -> None:
    det = calibrate_sequential(normal_reference, arl0=2e6, mode="binned")
    x = np.random.default_rng(20).normal(size=(10_400, F))
    x[10_000:, 3] *= 2.0
    _, events = det.step(SequentialState(), x)
    (alert,) = _alerts(events)
    assert (alert.feature, alert.channel, alert.direction) == ("x3", "spread", "up")
    assert alert.record <= 10_150


def test_an_alert_is_deduplicated_while_the_shift_persists_and_resolved_after_it(normal_reference: Profile) -> None:
    det = calibrate_sequential(normal_reference, arl0=2e6, features=["x0", "x1"])
    x = np.random.default_rng(21).normal(size=(12_000, 2))
    x[2_000:6_000, 1] -= 1.0
    state, events = det.step(SequentialState(), x)
    alert, resolved = events
    assert isinstance(alert, SequentialAlert) and alert.direction == "down" and alert.feature == "x1"
    assert isinstance(resolved, SequentialResolved) and resolved.alert == alert
    assert state.crossings > 20  # crossed again and again while it lasted, alerted once
    assert 6_000 < resolved.record <= 6_000 + det.clear_after
    assert state.open == {}


@settings(max_examples=30, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=1, max_value=2_999), max_size=12),
    mode=st.sampled_from(["mean", "binned"]),
)
def test_how_a_stream_is_batched_does_not_change_its_alerts(cuts: list[int], mode: Mode) -> None:
    rng = np.random.default_rng(22)
    ref = build_profile({"a": rng.normal(size=5_000), "b": rng.normal(size=5_000)})
    det = calibrate_sequential(ref, arl0=500, shift=1.0, clear_after=30, mode=mode)
    x = rng.normal(size=(3_000, 2))
    x[800:1500, 0] += 1.0
    times = np.arange(3_000) * 0.5
    whole_state, whole = det.step(SequentialState(), x, times=times)
    state, parts = SequentialState(), []
    bounds = [0, *sorted(set(cuts)), 3_000]
    for lo, hi in itertools.pairwise(bounds):
        state, events = det.step(state, x[lo:hi], times=times[lo:hi])
        parts.extend(events)
    assert len(whole) >= 4
    assert [_key(e) for e in parts] == [_key(e) for e in whole]
    assert (state.records, state.crossings, state.zeros, state.open) == (
        whole_state.records, whole_state.crossings, whole_state.zeros, whole_state.open,
    )  # fmt: skip
    np.testing.assert_allclose(state.cusums, whole_state.cusums, atol=1e-9)


def _key(e: SequentialEvent) -> tuple[object, ...]:
    if isinstance(e, SequentialAlert):
        return ("alert", e.feature, e.record, e.change_point, e.direction, round(e.value, 6), e.time)
    return ("resolved", e.alert.feature, e.record, e.time)


def test_bad_inputs_say_what_to_do(normal_reference: Profile) -> None:
    det = calibrate_sequential(normal_reference, arl0=1e6, features=["x0", "x1"])
    with pytest.raises(MonitorError, match="records x 2 features"):
        det.step(SequentialState(), np.zeros((5, 3)))
    with pytest.raises(MonitorError, match="lacks features"):
        det.step(SequentialState(), {"x0": [1.0]})
    with pytest.raises(MonitorError, match="one event time per record"):
        det.step(SequentialState(), np.zeros((5, 2)), times=[1.0])
    cat = build_profile({"ward": ["a", "b"] * 50}, categorical=["ward"])
    with pytest.raises(MonitorError, match="not a numeric feature"):
        calibrate_sequential(cat, arl0=1e6, features=["ward"])
    with pytest.raises(MonitorError, match="ARL0"):
        calibrate_sequential(normal_reference, arl0=1)
    state, events = det.step(SequentialState(), {"x0": [0.1, np.nan], "x1": [np.nan, 0.2]})
    assert state.records == 2 and events == ()


def test_degenerate_features_constant_and_binary() -> None:
    """A feature constant in the reference: mean mode (scale falls back to 1) alarms on a change of 2 within 30
    records, binned mode has nothing to score (its thresholds are infinite). A binary 0/1 feature's bins are
    (-inf, 0), [0, 1), [1, inf): a live value below 0 lands in the bin the reference never filled and alarms at once
    in binned mode."""
    rng = np.random.default_rng(30)
    ref = build_profile({"c": np.ones(1000), "b": rng.integers(0, 2, 1000).astype(float)})
    x = np.column_stack([np.ones(500), rng.integers(0, 2, 500).astype(float)])
    x[250:, 0] = 3.0
    mean = calibrate_sequential(ref, arl0=1e5, features=["c"])
    _, events = mean.step(SequentialState(), x[:, :1])
    (alert,) = _alerts(events)
    assert alert.feature == "c" and 250 < alert.record <= 280
    binned = calibrate_sequential(ref, arl0=1e5, mode="binned")
    assert all(math.isinf(h) for h, f in zip(binned.h, binned.channel_feature * 2, strict=True) if f == 0)
    y = x.copy()
    y[250:, 1] = -1.0
    _, events = binned.step(SequentialState(), y)
    assert [(a.feature, a.channel, a.record) for a in _alerts(events)] == [("b", "spread", 251)]
