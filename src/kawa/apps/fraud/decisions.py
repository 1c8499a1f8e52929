"""The streaming decision for a scored payment: block, investigate or pass, within the investigators' capacity.

A stream cannot rank a whole day before it ends, so the top-k-a-day budget of
:func:`kawa.apps.fraud.labels.investigate` becomes, in the stream:

- **block** the payment when its score is at least ``block_at`` (the card is investigated too, while the day's
  capacity lasts);
- **investigate** the card when its score reaches today's threshold (the ``capacity``-th highest payment score
  of the previous day) and fewer than ``capacity`` cards were investigated today; a card is investigated at most
  once a day;
- otherwise, with probability ``explore`` and while ``explore_capacity`` lasts, **investigate** at random: the
  randomised share that makes off-policy evaluation possible;
- else **pass**.

Each decision carries its propensity, the probability the policy had of taking that action in that state: 1 for a
rule, ``explore`` or ``1 - explore`` for the random branch. The decision is a pure function of a frozen state, the
payment and a uniform draw ``u`` the caller supplies (e.g. a hash of the payment's id, so a replay decides the
same), in the shape of Kawa's autoscaler.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field, replace
from typing import Literal

from kawa.apps.fraud.errors import InvalidSettings, InvalidTransactions

Action = Literal["block", "investigate", "pass"]


@dataclass(frozen=True)
class DecisionPolicy:
    capacity: int = 100
    """Investigations a day that the rule may start (the top-k budget)."""
    explore: float = 0.001
    """Probability that a payment not selected by the rule gets a random investigation."""
    explore_capacity: int = 5
    """Random investigations a day at most."""
    block_at: float = 0.95
    first_threshold: float = 0.5
    """Investigation threshold on the first day, before there is a previous day to learn it from."""

    def __post_init__(self) -> None:
        if self.capacity < 0 or self.explore_capacity < 0:
            raise InvalidSettings("capacity and explore_capacity must be >= 0")
        if not 0.0 <= self.explore < 1.0:
            raise InvalidSettings("explore must be in [0, 1): a probability, below 1 so passing stays possible")


@dataclass(frozen=True)
class DecisionState:
    day: int = -1
    threshold: float = 0.5
    investigated: int = 0
    explored: int = 0
    cards: frozenset[int] = frozenset()
    top: tuple[float, ...] = field(default=())
    """Today's ``capacity`` highest scores, ascending: tomorrow's threshold is the first of them."""


@dataclass(frozen=True)
class Decision:
    action: Action
    propensity: float
    reason: str
    investigate: bool


def _roll(policy: DecisionPolicy, state: DecisionState, day: int) -> DecisionState:
    if day == state.day:
        return state
    if state.day < 0:
        threshold = policy.first_threshold
    else:
        # Fewer payments than the capacity yesterday: investigate everything the capacity allows.
        threshold = state.top[0] if len(state.top) >= policy.capacity and state.top else 0.0
    return DecisionState(day=day, threshold=threshold)


def _remember(policy: DecisionPolicy, top: tuple[float, ...], score: float) -> tuple[float, ...]:
    if policy.capacity == 0:
        return top
    if len(top) < policy.capacity:
        kept = list(top)
        insort(kept, score)
        return tuple(kept)
    if score <= top[0]:
        return top
    kept = list(top[1:])
    insort(kept, score)
    return tuple(kept)


def decide(
    policy: DecisionPolicy, state: DecisionState, *, card: int, day: int, score: float, u: float
) -> tuple[DecisionState, Decision]:
    """The decision for one payment of ``card`` on ``day`` with model ``score``; ``u`` ~ U[0, 1)."""
    if day < state.day:
        raise InvalidTransactions(f"day {day} after day {state.day}: decide payments in time order")
    state = _roll(policy, state, day)
    state = replace(state, top=_remember(policy, state.top, score))
    fresh = card not in state.cards
    can_investigate = fresh and state.investigated < policy.capacity
    if score >= policy.block_at:
        if can_investigate:
            state = replace(state, investigated=state.investigated + 1, cards=state.cards | {card})
        return state, Decision("block", 1.0, "score >= block_at", can_investigate)
    if not fresh:
        return state, Decision("pass", 1.0, "card already investigated today", False)
    if score >= state.threshold and can_investigate:
        state = replace(state, investigated=state.investigated + 1, cards=state.cards | {card})
        return state, Decision("investigate", 1.0, "score >= today's threshold", True)
    if policy.explore > 0 and state.explored < policy.explore_capacity:
        if u < policy.explore:
            state = replace(state, explored=state.explored + 1, cards=state.cards | {card})
            return state, Decision("investigate", policy.explore, "random exploration", True)
        return state, Decision("pass", 1.0 - policy.explore, "not explored", False)
    return state, Decision("pass", 1.0, "below threshold, no exploration left", False)
