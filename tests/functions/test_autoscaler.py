"""The KPA decider on synthetic load traces: examples for each rule, then properties over random traces."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.errors import InvalidFunction
from kawa.functions.autoscaler import KPA, Decision, ScalingPolicy


def run(policy: ScalingPolicy, loads: list[float], dt: float = 1.0, ready: int = 0) -> list[Decision]:
    """Feed one sample per ``dt`` and apply every decision at once (the embedded host does)."""
    kpa = KPA(policy)
    out = []
    for i, load in enumerate(loads):
        now = i * dt
        kpa.record(now, load)
        decision = kpa.decide(now, ready)
        ready = decision.desired
        out.append(decision)
    return out


def test_defaults_are_knatives() -> None:
    p = ScalingPolicy.for_concurrency(10)
    assert p.target == pytest.approx(7.0)  # containerConcurrency x 70 % target utilization
    assert (p.stable_window_s, p.panic_window_s, p.panic_threshold_pct, p.scale_to_zero_grace_s) == (
        60.0, 6.0, 200.0, 30.0,
    )


def test_steady_load_settles_at_load_over_target() -> None:
    decisions = run(ScalingPolicy(target=2.0, stable_window_s=10), [9.0] * 40)
    assert decisions[-1].desired == math.ceil(9.0 / 2.0)
    assert not decisions[-1].panicking


def test_burst_enters_panic_and_scales_up_at_once() -> None:
    policy = ScalingPolicy(target=1.0, stable_window_s=60)
    loads = [1.0] * 70 + [10.0] * 6
    decisions = run(policy, loads)
    before, burst = decisions[69], decisions[70:]
    assert before.desired == 1 and not before.panicking
    assert all(d.panicking for d in burst)
    # The stable window alone would still say ~1-2 replicas; the panic window reacts within one sample.
    assert burst[0].desired >= 2 and burst[-1].desired == 10  # a full panic window of load 10
    assert math.ceil(burst[-1].stable_concurrency / policy.target) < burst[-1].desired


def test_no_scale_down_while_panicking_then_down_after_a_stable_window() -> None:
    policy = ScalingPolicy(target=1.0, stable_window_s=20, scale_to_zero_grace_s=5)
    loads = [1.0] * 25 + [12.0] * 4 + [0.0] * 60
    decisions = run(policy, loads)
    assert decisions[25].panicking
    end = next(i for i in range(26, len(decisions)) if not decisions[i].panicking)
    assert end - 25 >= 20, "panic lasts at least a stable window"
    held = [d.desired for d in decisions[25:end]]
    assert held == sorted(held), "no scale-down while panicking"
    peak = max(d.desired for d in decisions)
    assert held[-1] == peak >= 12 and loads[end - 1] == 0.0, "held at the peak although the load is gone"
    assert decisions[end].desired < peak
    assert decisions[-1].desired == 0


def test_scale_to_zero_only_after_the_grace_period() -> None:
    policy = ScalingPolicy(target=1.0, stable_window_s=6, scale_to_zero_grace_s=30)
    loads = [1.0] * 10 + [0.0] * 40
    decisions = run(policy, loads)
    last_active = 9
    for i, d in enumerate(decisions[10:], start=10):
        if i - last_active < 30:
            assert d.desired == 1, f"t={i}: scaled to zero {i - last_active} s after the last event"
    assert decisions[last_active + 30].desired == 0


def test_scale_from_zero_on_the_first_event() -> None:
    policy = ScalingPolicy(target=4.0, stable_window_s=60)
    decisions = run(policy, [0.0] * 100 + [1.0])
    assert decisions[99].desired == 0
    assert decisions[100].desired == 1


def test_min_and_max_scale_bound_every_decision() -> None:
    policy = ScalingPolicy(target=1.0, min_scale=2, max_scale=5, stable_window_s=10)
    decisions = run(policy, [0.0] * 20 + [100.0] * 20 + [0.0] * 60)
    assert {d.desired for d in decisions} <= set(range(2, 6))
    assert decisions[19].desired == 2 and decisions[39].desired == 5 and decisions[-1].desired == 2


def test_scale_down_is_rate_limited() -> None:
    policy = ScalingPolicy(target=1.0, stable_window_s=6, scale_to_zero_grace_s=0, max_scale_down_rate=2.0)
    kpa = KPA(policy)
    kpa.record(0.0, 0.0)
    assert kpa.decide(0.0, 16).desired == 8  # at most halve per decision


@pytest.mark.parametrize(
    "knobs",
    [
        {"target": 0},
        {"target": 1, "min_scale": 3, "max_scale": 2},
        {"target": 1, "panic_threshold_pct": 90},
        {"target": 1, "panic_window_pct": 0.5},
        {"target": 1, "stable_window_s": 0},
    ],
)
def test_invalid_policies_are_refused(knobs: dict[str, float]) -> None:
    with pytest.raises(InvalidFunction):
        ScalingPolicy(**knobs)  # type: ignore[arg-type]


@st.composite
def policies(draw: st.DrawFn) -> ScalingPolicy:
    min_scale = draw(st.integers(0, 3))
    return ScalingPolicy(
        target=draw(st.floats(0.5, 10.0)),
        min_scale=min_scale,
        max_scale=draw(st.one_of(st.just(0), st.integers(max(1, min_scale), 20))),
        stable_window_s=draw(st.floats(6.0, 60.0)),
        panic_window_pct=draw(st.floats(5.0, 100.0)),
        panic_threshold_pct=draw(st.floats(110.0, 400.0)),
        scale_to_zero_grace_s=draw(st.floats(0.0, 30.0)),
    )


traces = st.lists(st.one_of(st.just(0.0), st.floats(0.0, 60.0)), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(policies(), traces)
def test_properties_hold_on_any_trace(policy: ScalingPolicy, loads: list[float]) -> None:
    kpa = KPA(policy)
    ready = 0
    previous: Decision | None = None
    for i, load in enumerate(loads):
        now = float(i)
        kpa.record(now, load)
        d = kpa.decide(now, ready)
        # Bounds.
        assert d.desired >= policy.min_scale
        if policy.max_scale:
            assert d.desired <= policy.max_scale
        # No scale-down while panicking.
        if previous is not None and previous.panicking and d.panicking:
            assert d.desired >= previous.desired
        # Scale from zero at once.
        if load > 0 and policy.max_scale != 0:
            assert d.desired >= 1
        # Zero only after a quiet stable window, and (when something ran) a quiet grace period.
        if d.desired == 0:
            recent = [x for j, x in enumerate(loads[: i + 1]) if now - j < policy.stable_window_s]
            assert not any(recent)
            if ready > 0:
                grace = [x for j, x in enumerate(loads[: i + 1]) if now - j < policy.scale_to_zero_grace_s]
                assert not any(grace)
        ready, previous = d.desired, d


@settings(max_examples=150, deadline=None)
@given(policies(), st.floats(0.0, 60.0))
def test_constant_load_converges(policy: ScalingPolicy, load: float) -> None:
    steps = int(2 * policy.stable_window_s + max(policy.scale_to_zero_grace_s, 0) + 4)
    decisions = run(policy, [load] * steps)
    expected = policy.clamp(max(1, math.ceil(load / policy.target - 1e-9)) if load > 0 else 0)
    assert decisions[-1].desired == expected
