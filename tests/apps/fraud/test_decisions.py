"""The streaming decision: capacity, one investigation per card a day, blocking, propensities."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.apps.fraud.decisions import DecisionPolicy, DecisionState, decide
from kawa.apps.fraud.errors import InvalidSettings, InvalidTransactions

payments = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 15), st.floats(0, 1), st.floats(0, 1, exclude_max=True)),
    min_size=1, max_size=120,
).map(lambda rows: sorted(rows, key=lambda r: r[0]))


@settings(max_examples=60, deadline=None)
@given(payments, st.integers(0, 6), st.integers(0, 3), st.floats(0, 0.9))
def test_capacity_cards_and_blocking_hold_for_any_stream(
    rows: list[tuple[int, int, float, float]], capacity: int, explore_cap: int, explore: float
) -> None:
    policy = DecisionPolicy(capacity=capacity, explore=explore, explore_capacity=explore_cap, block_at=0.9)
    state = DecisionState()
    per_day: dict[int, list[tuple[int, str, bool, str]]] = {}
    for day, card, score, u in rows:
        state, d = decide(policy, state, card=card, day=day, score=score, u=u)
        per_day.setdefault(day, []).append((card, d.action, d.investigate, d.reason))
        assert (d.action == "block") == (score >= 0.9)
        assert 0 < d.propensity <= 1
        if d.reason == "random exploration":
            assert d.propensity == explore and u < explore
    for decided in per_day.values():
        rule = [c for c, _, inv, why in decided if inv and why != "random exploration"]
        explored = [c for c, _, inv, why in decided if why == "random exploration"]
        assert len(rule) <= capacity and len(explored) <= explore_cap
        assert len(set(rule + explored)) == len(rule + explored)  # a card once a day at most


def test_threshold_is_learnt_from_the_previous_day() -> None:
    policy = DecisionPolicy(capacity=2, explore=0.0, first_threshold=0.5, block_at=1.0)
    state = DecisionState()
    acts = []
    for card, score in enumerate([0.6, 0.1, 0.8, 0.3, 0.7]):  # day 0: threshold 0.5, capacity 2
        state, d = decide(policy, state, card=card, day=0, score=score, u=0.5)
        acts.append(d.action)
    assert acts == ["investigate", "pass", "investigate", "pass", "pass"]  # capacity used up at 0.8
    state, d = decide(policy, state, card=9, day=1, score=0.65, u=0.5)
    assert state.threshold == 0.7 and d.action == "pass"  # the 2nd highest score of day 0
    state, d = decide(policy, state, card=8, day=1, score=0.75, u=0.5)
    assert d.action == "investigate"


def test_exploration_frequency_is_its_propensity() -> None:
    """Seeded simulation: over many days the share of randomly investigated payments is ``explore``."""
    policy = DecisionPolicy(capacity=0, explore=0.05, explore_capacity=10_000, block_at=2.0)
    rng = np.random.default_rng(3)
    state, hits, n = DecisionState(), 0, 20_000
    for i in range(n):
        state, d = decide(policy, state, card=i, day=i // 1000, score=float(rng.random()), u=float(rng.random()))
        hits += d.reason == "random exploration"
    assert abs(hits / n - 0.05) < 4 * np.sqrt(0.05 * 0.95 / n)


def test_policy_and_order_errors_say_what_to_fix() -> None:
    with pytest.raises(InvalidSettings, match="explore"):
        DecisionPolicy(explore=1.0)
    state, _ = decide(DecisionPolicy(), DecisionState(), card=1, day=3, score=0.1, u=0.5)
    with pytest.raises(InvalidTransactions, match="time order"):
        decide(DecisionPolicy(), state, card=1, day=2, score=0.1, u=0.5)
