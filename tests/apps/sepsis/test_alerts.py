"""The alert policy by property: suppression per patient, the hourly budget, the threshold."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.apps.sepsis.alerts import AlertPolicy, decide, run
from kawa.errors import ConfigError

rows = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.floats(0, 48, allow_nan=False), st.floats(0, 20, allow_nan=False)),
    max_size=200,
).map(lambda xs: sorted(xs, key=lambda r: r[1]))
policies = st.builds(
    AlertPolicy, st.floats(0, 20, allow_nan=False), st.floats(0, 24, allow_nan=False), st.integers(1, 6)
)


@settings(max_examples=40, deadline=None)
@given(policies, rows)
def test_never_two_alerts_for_a_patient_within_the_window_nor_more_than_the_budget_in_an_hour(
    policy: AlertPolicy, scores: list[tuple[str, float, float]]
) -> None:
    alerts = [(p, t) for p, t, v in run(policy, scores) if v.alert]
    by_patient: dict[str, list[float]] = {}
    for p, t in alerts:
        by_patient.setdefault(p, []).append(t)
    for times in by_patient.values():
        assert all(b - a >= policy.suppress_h for a, b in itertools.pairwise(times))
    times = [t for _p, t in alerts]
    for t in times:
        assert sum(1 for u in times if t - 1.0 < u <= t) <= policy.budget_per_h


@settings(max_examples=40, deadline=None)
@given(policies, rows)
def test_below_the_threshold_never_alerts_and_above_it_only_suppression_or_the_budget_stop_it(
    policy: AlertPolicy, scores: list[tuple[str, float, float]]
) -> None:
    for (_p, _t, score), (_q, _u, verdict) in zip(scores, run(policy, scores), strict=True):
        if score < policy.threshold:
            assert verdict.why == "below"
        else:
            assert verdict.why in ("alert", "suppressed", "over-budget")


def test_a_worked_sequence() -> None:
    policy = AlertPolicy(threshold=5, suppress_h=12, budget_per_h=2)
    seq = [("a", 0.0, 6), ("a", 0.5, 9), ("b", 0.6, 5), ("c", 0.9, 7), ("c", 1.05, 7), ("a", 12.0, 5), ("d", 12.1, 4)]
    assert [v.why for _p, _t, v in run(policy, seq)] == [
        "alert", "suppressed", "alert", "over-budget", "alert", "alert", "below",
    ]  # fmt: skip
    assert decide(policy, None, (), 0.0, float("nan")).why == "below"


def test_a_bad_policy_says_what_it_needs() -> None:
    with pytest.raises(ConfigError, match="budget_per_h >= 1"):
        AlertPolicy(threshold=5, budget_per_h=0)
