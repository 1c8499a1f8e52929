"""The streaming join of delayed outcomes to decision records: state and functions, no clock, no I/O.

A decision made at ``d`` *matures* at ``d + horizon + grace``; its outcome counts if it was observed by then.

- **By EventRef** (``by="ref"``): an outcome names the event its decision served (every model version that
  decided on that event gets it).
- **By entity** (``by="entity"``): an outcome for an entity at time ``t`` (e.g. sepsis onset) applies to that
  entity's decisions made in ``[t - horizon, t]``; a decision's label is the largest label that applied.

:func:`advance` moves the *watermark* (the event time up to which both topics have been read) and emits the
decisions that matured: with their outcome, or, when none came (*expired*), as a negative (``missing=
"negative"``) or not at all (``missing="exclude"``); both are counted. Outcomes that arrive before their
decision (*orphans*) are held until it arrives or ``horizon + grace`` passes after the outcome's time. The same
outcome twice (:attr:`OutcomeEvent.key`) counts once, as a *duplicate*; a second, different label for a
decision is a *conflict* (the larger label is kept). An outcome observed after its decision matured is *late*:
counted, and returned by the next :func:`advance`, never silently dropped. Matured decisions are remembered for
another ``horizon + grace`` to recognise late outcomes and redelivered decisions.

Results depend only on the records and the watermark steps, so replaying the topics with the same steps (see
:class:`kawa.monitor.outcomes.OutcomeJoiner`) rebuilds the state exactly, and so does :func:`restore` of a
:func:`snapshot`. If the watermark is honest (every record with a time at or before it has been read), they
depend only on event times, not on arrival order.

The state is a mutable object that only these functions change: one record costs O(1) (plus the entity's
recent decisions), where copying a frozen state would cost O(state) per record.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kawa.monitor.errors import MonitorError
from kawa.monitor.records import DecisionData, DecisionRecord, OutcomeData, OutcomeEvent

__all__ = [
    "Advance",
    "JoinConfig",
    "JoinCounts",
    "JoinState",
    "Matured",
    "OutcomeStatus",
    "advance",
    "on_decision",
    "on_outcome",
    "replay",
    "restore",
    "snapshot",
    "step",
]

JoinBy = Literal["ref", "entity"]
Missing = Literal["negative", "exclude"]
OutcomeStatus = Literal["joined", "orphan", "duplicate", "late"]

_MATURE, _FORGET, _RELEASE = 0, 1, 2
SNAPSHOT_FORMAT = "kawa.monitor.join/1"


@dataclass(frozen=True)
class JoinConfig:
    """``horizon``: seconds after a decision within which its outcome happens (the label window); ``grace``:
    further seconds to wait for the outcome to be observed; ``missing``: what a decision without outcome
    becomes at maturity."""

    horizon: float
    by: JoinBy = "ref"
    missing: Missing = "negative"
    grace: float = 0.0

    def __post_init__(self) -> None:
        if not (self.horizon >= 0 and math.isfinite(self.horizon)) or not (
            self.grace >= 0 and math.isfinite(self.grace)
        ):
            raise MonitorError("a join's horizon and grace are finite, non-negative numbers of seconds")
        if self.by not in ("ref", "entity"):
            raise MonitorError(f"join by 'ref' (the EventRef) or 'entity' (key + time window), got {self.by!r}")
        if self.missing not in ("negative", "exclude"):
            raise MonitorError(f"missing outcomes mature as 'negative' or are 'exclude'd, got {self.missing!r}")

    @property
    def wait(self) -> float:
        return self.horizon + self.grace


@dataclass(frozen=True)
class Matured:
    """A decision whose horizon has passed, with its outcome (``observed``) or as an assumed negative."""

    decision: DecisionRecord
    label: int | None
    value: float | None
    observed: bool
    matured_at: float


@dataclass(frozen=True)
class Advance:
    """What one :func:`advance` produced: the matured decisions (in maturity order), the decisions that
    expired without an outcome (emitted as negatives or excluded, per the config) and the late outcomes
    received since the previous advance."""

    watermark: float
    matured: tuple[Matured, ...] = ()
    expired: tuple[DecisionRecord, ...] = ()
    late: tuple[OutcomeEvent, ...] = ()


@dataclass(frozen=True)
class JoinCounts:
    """Counters since the start of the streams. ``joined``: outcomes that reached at least one decision in
    time; ``late``: outcomes observed after a decision they apply to had matured; ``orphans``: outcomes that
    arrived before any decision they apply to (``orphans_matched`` of them found one later, ``unmatched``
    outcomes never found one); ``expired``: decisions matured without an outcome (``excluded`` of them not
    emitted)."""

    decisions: int = 0
    duplicate_decisions: int = 0
    stale_decisions: int = 0
    outcomes: int = 0
    duplicates: int = 0
    conflicts: int = 0
    joined: int = 0
    late: int = 0
    orphans: int = 0
    orphans_matched: int = 0
    unmatched: int = 0
    matured: int = 0
    expired: int = 0
    excluded: int = 0
    pending: int = 0
    held: int = 0


@dataclass
class _Entry:
    decision: DecisionRecord
    maturity: float
    label: int | None = None
    value: float | None = None
    outcomes: int = 0
    matured: bool = False


@dataclass
class _Held:
    outcome: OutcomeEvent
    release_at: float
    matched: bool = False
    orphan: bool = False
    late: bool = False


@dataclass
class JoinState:
    """The join's state: pending and recently matured decisions, held outcomes, counters. Build a fresh one
    with ``JoinState(config)``; change it only with :func:`on_decision`, :func:`on_outcome`, :func:`advance`."""

    config: JoinConfig
    watermark: float = -math.inf
    entries: dict[str, _Entry] = field(default_factory=dict)
    by_target: dict[str, list[str]] = field(default_factory=dict)
    held: dict[str, dict[str, _Held]] = field(default_factory=dict)
    late_buffer: list[OutcomeEvent] = field(default_factory=list)
    timers: list[tuple[float, int, int, str, str]] = field(default_factory=list)
    seq: int = 0
    n: dict[str, int] = field(default_factory=dict)

    def counts(self) -> JoinCounts:
        pending = sum(1 for e in self.entries.values() if not e.matured)
        held = sum(len(h) for h in self.held.values())
        return JoinCounts(**self.n, pending=pending, held=held)

    def _count(self, name: str, by: int = 1) -> None:
        self.n[name] = self.n.get(name, 0) + by

    def _timer(self, at: float, kind: int, key: str, target: str = "") -> None:
        self.seq += 1
        heapq.heappush(self.timers, (at, self.seq, kind, key, target))

    def _target_of(self, decision: DecisionRecord) -> str:
        return decision.ref.key() if self.config.by == "ref" else decision.entity

    def _outcome_target(self, outcome: OutcomeEvent) -> str | None:
        if self.config.by == "ref":
            return outcome.ref.key() if outcome.ref is not None else None
        return outcome.entity


def _applies(state: JoinState, entry: _Entry, outcome: OutcomeEvent) -> bool:
    if state.config.by == "ref":
        return True
    return outcome.time - state.config.horizon <= entry.decision.decided_at <= outcome.time


def _attach(state: JoinState, entry: _Entry, held: _Held) -> None:
    """Apply a held outcome to a decision it applies to: joined, or late when the decision has matured."""
    outcome = held.outcome
    if entry.matured or outcome.observed_at > entry.maturity:
        if not held.late:
            held.late = True
            state._count("late")
            state.late_buffer.append(outcome)
        return
    if not held.matched:
        held.matched = True
        state._count("joined")
        if held.orphan:
            state._count("orphans_matched")
    if entry.outcomes and outcome.label is not None and entry.label is not None and outcome.label != entry.label:
        state._count("conflicts")
    entry.outcomes += 1
    if outcome.label is not None:
        entry.label = outcome.label if entry.label is None else max(entry.label, outcome.label)
    if entry.value is None:
        entry.value = outcome.value


def on_decision(state: JoinState, decision: DecisionRecord) -> bool:
    """Add a decision record; False (and counted) when it is one already seen, or one so old that a matured
    decision would have been forgotten (``stale_decisions``: older than twice ``horizon + grace``)."""
    key = decision.key
    if key in state.entries:
        state._count("duplicate_decisions")
        return False
    if decision.decided_at + 2 * state.config.wait < state.watermark:
        # Past the time a matured decision is remembered: most likely one forgotten and redelivered.
        state._count("stale_decisions")
        return False
    state._count("decisions")
    entry = _Entry(decision, decision.decided_at + state.config.wait)
    state.entries[key] = entry
    target = state._target_of(decision)
    state.by_target.setdefault(target, []).append(key)
    state._timer(entry.maturity, _MATURE, key, target)
    for held in state.held.get(target, {}).values():
        if _applies(state, entry, held.outcome):
            _attach(state, entry, held)
    return True


def on_outcome(state: JoinState, outcome: OutcomeEvent) -> OutcomeStatus:
    """Add an outcome; what became of it on arrival (``orphan``: held for a decision not yet seen)."""
    target = state._outcome_target(outcome)
    if target is None:
        raise MonitorError(
            f"this join matches outcomes by {state.config.by}: an outcome needs "
            + ("the EventRef of its decision" if state.config.by == "ref" else "an entity key")
        )
    held_here = state.held.setdefault(target, {})
    if outcome.key in held_here:
        state._count("duplicates")
        return "duplicate"
    state._count("outcomes")
    held = _Held(outcome, outcome.time + state.config.wait)
    held_here[outcome.key] = held
    state._timer(held.release_at, _RELEASE, outcome.key, target)
    found = False
    for key in state.by_target.get(target, ()):
        entry = state.entries[key]
        if _applies(state, entry, outcome):
            found = True
            _attach(state, entry, held)
    if not found:
        held.orphan = True
        state._count("orphans")
        return "orphan"
    return "joined" if held.matched else "late"


def advance(state: JoinState, watermark: float) -> Advance:
    """Move event time to ``watermark``: mature the decisions due, release the held outcomes whose wait has
    passed and forget what is past use. A watermark below the current one changes nothing."""
    late = tuple(state.late_buffer)
    state.late_buffer.clear()
    if watermark <= state.watermark:
        return Advance(state.watermark, late=late)
    state.watermark = watermark
    matured: list[Matured] = []
    expired: list[DecisionRecord] = []
    wait = state.config.wait
    while state.timers and state.timers[0][0] <= watermark:
        at, _, kind, key, target = heapq.heappop(state.timers)
        if kind == _MATURE:
            entry = state.entries[key]
            entry.matured = True
            if entry.outcomes:
                state._count("matured")
                matured.append(Matured(entry.decision, entry.label, entry.value, True, at))
            else:
                state._count("expired")
                expired.append(entry.decision)
                if state.config.missing == "negative":
                    state._count("matured")
                    matured.append(Matured(entry.decision, 0, None, False, at))
                else:
                    state._count("excluded")
            state._timer(at + wait, _FORGET, key, target)
        elif kind == _FORGET:
            del state.entries[key]
            keys = state.by_target[target]
            keys.remove(key)
            if not keys:
                del state.by_target[target]
        else:
            held = state.held[target].pop(key)
            if not state.held[target]:
                del state.held[target]
            if not held.matched and not held.late:
                state._count("unmatched")
    return Advance(watermark, tuple(matured), tuple(expired), late)


def step(
    state: JoinState, decisions: Iterable[DecisionRecord], outcomes: Iterable[OutcomeEvent], watermark: float
) -> Advance:
    """One step: add ``decisions``, then ``outcomes``, then advance to ``watermark``. Within the step the records
    go in event-time order (decisions by decision time, outcomes by observation time), so the order they arrived
    in does not matter: the same outcome sent twice counts by its first observation, not by whichever copy came
    first off the log."""
    for d in sorted(decisions, key=lambda d: d.decided_at):
        on_decision(state, d)
    for o in sorted(outcomes, key=lambda o: o.observed_at):
        on_outcome(state, o)
    return advance(state, watermark)


def replay(
    state: JoinState,
    steps: Iterable[tuple[Iterable[DecisionRecord], Iterable[OutcomeEvent], float]],
) -> list[Advance]:
    """Run ``(decisions, outcomes, watermark)`` steps (each one :func:`step`). The service records its steps so
    that a restart replays them into an identical state."""
    return [step(state, decisions, outcomes, watermark) for decisions, outcomes, watermark in steps]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def snapshot(state: JoinState) -> dict[str, Any]:
    """The whole state as JSON-ready data (format ``kawa.monitor.join/1``): :func:`restore` gives back a state
    that behaves identically, so a checkpoint can stand in for replaying the topics up to it."""
    return {
        "format": SNAPSHOT_FORMAT,
        "config": asdict(state.config),
        "watermark": _finite(state.watermark),
        "seq": state.seq,
        "n": dict(state.n),
        "entries": [
            [e.decision.data().data(), e.maturity, e.label, e.value, e.outcomes, e.matured]
            for e in state.entries.values()
        ],
        "held": [
            [target, [[h.outcome.data().data(), h.release_at, h.matched, h.orphan, h.late] for h in held.values()]]
            for target, held in state.held.items()
        ],
        "late": [o.data().data() for o in state.late_buffer],
        "timers": [list(t) for t in state.timers],
    }


def restore(data: Mapping[str, Any]) -> JoinState:
    """The state a :func:`snapshot` holds; :class:`MonitorError` for data that is not one."""
    if not isinstance(data, Mapping) or data.get("format") != SNAPSHOT_FORMAT:
        raise MonitorError(f"not a join snapshot (format {SNAPSHOT_FORMAT}); take one with kawa.monitor.join.snapshot")
    try:
        state = JoinState(JoinConfig(**data["config"]))
        state.watermark = -math.inf if data["watermark"] is None else float(data["watermark"])
        state.seq = int(data["seq"])
        state.n = {str(k): int(v) for k, v in data["n"].items()}
        for raw, maturity, label, value, outcomes, matured in data["entries"]:
            decision = DecisionRecord.from_data(DecisionData.model_validate(raw))
            state.entries[decision.key] = _Entry(decision, maturity, label, value, outcomes, matured)
            state.by_target.setdefault(state._target_of(decision), []).append(decision.key)
        for target, held in data["held"]:
            here = state.held[target] = {}
            for raw, release_at, matched, orphan, late in held:
                outcome = OutcomeEvent.from_data(OutcomeData.model_validate(raw))
                here[outcome.key] = _Held(outcome, release_at, matched, orphan, late)
        state.late_buffer = [OutcomeEvent.from_data(OutcomeData.model_validate(o)) for o in data["late"]]
        state.timers = [(float(a), int(q), int(k), str(key), str(t)) for a, q, k, key, t in data["timers"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MonitorError(f"the join snapshot is damaged ({exc}); rebuild the state by replaying the topics") from None
    return state
