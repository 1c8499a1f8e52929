"""The loop's decisions: ``decide(policy, state, event) -> (state, actions)``, pure, like the autoscaler.

A model's loop is idle, or carries one candidate through its phases::

    idle --trigger--> training --offline gate--> shadow --OPE / n outcomes--> canary --evaluation--> approval
      ^                  |                          |                           |                      |
      +---- Reject ------+----------- Reject -------+-------- Rollback ---------+----- Promote / Reject-+

Triggers (a monitor alert of a listed type, a significant matured-metric drop, the schedule, enough new
outcomes) start a training unless one ran within the cooldown, a candidate is in flight or too few outcomes
have matured; a refused trigger is a :class:`Skip` action, so the timeline shows it. The rules that must hold
whatever the events (property-tested):

- never two trainings within one cooldown;
- never a promotion without a passing evaluation decision of the candidate's own canary (when a canary is
  configured), and never one after that canary was stopped;
- a guardrail breach (or a broken split) in canary always rolls back;
- a candidate worse than the champion offline (beyond the margin), below the OPE bound, or losing its canary is
  never promoted.

Events about another candidate (a stale job, an old experiment) change nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from kawa.retrain.policy import LoopPolicy

__all__ = [
    "Action", "Alert", "Approval", "Candidate", "Evaluated", "Event", "LoopState", "OpeEstimate", "Outcomes",
    "PerformanceDrop", "Promote", "Reject", "RequestApproval", "Rollback", "ShadowProgress", "Skip", "StartCanary",
    "StartShadow", "Tick", "Train", "TrainingDone", "canary_name", "decide",
]  # fmt: skip

Phase = Literal["idle", "training", "shadow", "canary", "approval"]
CANDIDATE_ARM = "candidate"
CHAMPION_ARM = "champion"


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    id: str
    at: float


@dataclass(frozen=True)
class Alert(_Event):
    """A monitor alert (``kawa.monitor.alert``) of ``kind`` (drift, performance, missing, ...)."""

    kind: str = "drift"


@dataclass(frozen=True)
class PerformanceDrop(_Event):
    """The matured metric fell by ``drop``; ``lower`` is the lower bound of the drop's interval (> 0: real)."""

    drop: float = 0.0
    lower: float = 0.0


@dataclass(frozen=True)
class Tick(_Event):
    """Time passed (for the schedule)."""


@dataclass(frozen=True)
class Outcomes(_Event):
    """``count`` more outcomes matured."""

    count: int = 0


@dataclass(frozen=True)
class TrainingDone(_Event):
    """The candidate's training job ended: the registered ``version`` and the holdout metric of the candidate
    and of the champion on the same window (higher is better), or the job's ``error``."""

    job: str = ""
    version: int | None = None
    candidate_metric: float | None = None
    champion_metric: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class OpeEstimate(_Event):
    """The off-policy lower bound of (candidate - champion) on the primary metric, from shadow scores
    (``estimate``, ``upper`` and ``n``: the rest of the estimate, kept as evidence)."""

    version: int = 0
    lower: float = 0.0
    estimate: float = 0.0
    upper: float = 0.0
    n: int = 0


@dataclass(frozen=True)
class ShadowProgress(_Event):
    version: int = 0
    matured: int = 0


@dataclass(frozen=True)
class Evaluated(_Event):
    """The evaluation decided ``experiment`` (``kind`` as :class:`kawa.evaluation.decision.Decision`);
    ``record_ok``: its decision record recomputes."""

    experiment: str = ""
    kind: str = "continue"
    arm: str | None = None
    record_ok: bool = False


@dataclass(frozen=True)
class Approval(_Event):
    version: int = 0
    approved: bool = False
    by: str = ""


Event = Alert | PerformanceDrop | Tick | Outcomes | TrainingDone | OpeEstimate | ShadowProgress | Evaluated | Approval


# --- actions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Train:
    job: str
    trigger: str
    window_s: float | None


@dataclass(frozen=True)
class StartShadow:
    version: int


@dataclass(frozen=True)
class StartCanary:
    version: int
    experiment: str


@dataclass(frozen=True)
class RequestApproval:
    version: int


@dataclass(frozen=True)
class Promote:
    version: int
    reason: str
    experiment: str | None = None


@dataclass(frozen=True)
class Reject:
    """Discard a candidate that never served users (training failed, offline or OPE gate failed, refused)."""

    version: int | None
    reason: str


@dataclass(frozen=True)
class Rollback:
    """Stop the candidate's canary: every unit back on the champion."""

    version: int
    reason: str
    experiment: str | None = None


@dataclass(frozen=True)
class Skip:
    trigger: str
    reason: str


Action = Train | StartShadow | StartCanary | RequestApproval | Promote | Reject | Rollback | Skip


# --- state -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    trigger: str
    job: str
    version: int | None = None
    experiment: str | None = None
    ope_lower: float | None = None
    shadow_matured: int = 0


@dataclass(frozen=True)
class LoopState:
    phase: Phase = "idle"
    candidate: Candidate | None = None
    trainings: int = 0
    last_training_at: float = -math.inf
    last_trigger_at: float = -math.inf
    matured: int = 0
    outcomes_since_training: int = 0
    champion: int | None = None
    seen: frozenset[str] = field(default_factory=frozenset)


def canary_name(model: str, version: int) -> str:
    return f"{model}-canary-v{version}"


def decide(policy: LoopPolicy, state: LoopState, event: Event) -> tuple[LoopState, tuple[Action, ...]]:
    """The new state and the actions for ``event``. An event already seen (same id) changes nothing."""
    if event.id in state.seen:
        return state, ()
    if not isinstance(event, Tick):  # ticks come from the controller's clock, once each: not worth remembering
        state = replace(state, seen=state.seen | {event.id})
    if isinstance(event, Outcomes):
        state = replace(state, matured=state.matured + max(0, event.count),
                        outcomes_since_training=state.outcomes_since_training + max(0, event.count))
        due = policy.triggers.new_outcomes is not None and state.outcomes_since_training >= policy.triggers.new_outcomes
        return _trigger(policy, state, event) if due else (state, ())
    if isinstance(event, Alert):
        return _trigger(policy, state, event) if event.kind in policy.triggers.alerts else (state, ())
    if isinstance(event, PerformanceDrop):
        delta = policy.triggers.performance_drop
        real = delta is not None and event.drop >= delta and event.lower > 0
        return _trigger(policy, state, event) if real else (state, ())
    if isinstance(event, Tick):
        every = policy.triggers.schedule_s
        last = max(state.last_training_at, state.last_trigger_at)
        due = every is not None and (event.at - last >= every or not math.isfinite(last))
        return _trigger(policy, state, event) if due else (state, ())
    c = state.candidate
    if c is None:
        return state, ()
    if isinstance(event, TrainingDone):
        return _trained(policy, state, c, event) if state.phase == "training" and event.job == c.job else (state, ())
    if c.version is None:
        return state, ()
    if isinstance(event, OpeEstimate) and event.version == c.version and state.phase == "shadow":
        state = replace(state, candidate=replace(c, ope_lower=event.lower))
        margin = policy.gates.ope_margin
        if margin is not None and event.lower < -margin:
            return _idle(state), (Reject(c.version, f"off-policy lower bound {event.lower:.4g} is below "
                                                    f"-{margin:g}: the candidate may be worse than the champion"),)
        return _after_shadow(policy, state)
    if isinstance(event, ShadowProgress) and event.version == c.version and state.phase == "shadow":
        state = replace(state, candidate=replace(c, shadow_matured=max(c.shadow_matured, event.matured)))
        return _after_shadow(policy, state)
    if isinstance(event, Evaluated) and state.phase == "canary" and event.experiment == c.experiment:
        return _evaluated(policy, state, c, event)
    if isinstance(event, Approval) and state.phase == "approval" and event.version == c.version:
        if event.approved:
            return _promote(state, c, f"approved by {event.by or 'a person'}")
        return _idle(state), (Reject(c.version, f"rejected by {event.by or 'a person'}"),)
    return state, ()


def _trigger(policy: LoopPolicy, state: LoopState, event: Event) -> tuple[LoopState, tuple[Action, ...]]:
    lim = policy.limits
    state = replace(state, last_trigger_at=max(state.last_trigger_at, event.at))
    why = None
    if state.candidate is not None:
        why = f"candidate {state.candidate.job} is in flight (at most {lim.max_candidates} at once)"
    elif event.at - state.last_training_at < lim.cooldown_s:
        ago = event.at - state.last_training_at
        why = f"a training started {ago:.0f} s ago, within the {lim.cooldown_s:g} s cooldown"
    elif state.matured < lim.min_outcomes:
        why = f"{state.matured} matured outcomes, fewer than the {lim.min_outcomes} the policy needs"
    if why is not None:
        return state, (Skip(event.id, why),)
    n = state.trainings + 1
    job = f"{policy.model}-retrain-{n}"
    state = replace(state, phase="training", candidate=Candidate(event.id, job), trainings=n,
                    last_training_at=event.at, outcomes_since_training=0)  # fmt: skip
    return state, (Train(job, event.id, policy.training.window_s),)


Step = tuple[LoopState, tuple[Action, ...]]


def _trained(policy: LoopPolicy, state: LoopState, c: Candidate, e: TrainingDone) -> Step:
    if e.error is not None or e.version is None:
        return _idle(state), (Reject(e.version, f"training {c.job} failed: {e.error or 'no version registered'}"),)
    if e.candidate_metric is None or e.champion_metric is None:
        return _idle(state), (Reject(e.version, "the trainer reported no holdout metric for the candidate and the "
                                                "champion on the same window; the offline gate cannot pass"),)
    margin = policy.gates.offline_margin
    if not e.candidate_metric >= e.champion_metric - margin:
        return _idle(state), (Reject(e.version, f"offline: the candidate's holdout metric {e.candidate_metric:.4g} "
                                                f"trails the champion's {e.champion_metric:.4g} by more than "
                                                f"{margin:g}"),)
    state = replace(state, candidate=replace(c, version=e.version))
    g = policy.gates
    if g.shadow_outcomes > 0 or g.ope_margin is not None:
        return replace(state, phase="shadow"), (StartShadow(e.version),)
    return _next_after_shadow(policy, state)


def _after_shadow(policy: LoopPolicy, state: LoopState) -> tuple[LoopState, tuple[Action, ...]]:
    c = state.candidate
    assert c is not None
    g = policy.gates
    if c.shadow_matured < g.shadow_outcomes or (g.ope_margin is not None and c.ope_lower is None):
        return state, ()
    return _next_after_shadow(policy, state)


def _next_after_shadow(policy: LoopPolicy, state: LoopState) -> tuple[LoopState, tuple[Action, ...]]:
    c = state.candidate
    assert c is not None and c.version is not None
    if policy.gates.canary is not None:
        name = canary_name(policy.model, c.version)
        return replace(state, phase="canary", candidate=replace(c, experiment=name)), (StartCanary(c.version, name),)
    if policy.gates.approval:
        return replace(state, phase="approval"), (RequestApproval(c.version),)
    return _promote(state, c, "passed the offline gate (no canary configured)")


def _evaluated(policy: LoopPolicy, state: LoopState, c: Candidate, e: Evaluated) -> Step:
    assert c.version is not None
    if e.kind == "continue":
        return state, ()
    if e.kind == "stop-efficacy" and e.arm == CANDIDATE_ARM and e.record_ok:
        if policy.gates.approval:
            return replace(state, phase="approval"), (RequestApproval(c.version),)
        return _promote(state, c, f"won its canary {c.experiment}")
    reason = {
        "guardrail-breach": "a guardrail was breached in canary",
        "srm": "the canary's split is broken (sample ratio mismatch)",
        "stop-futility": "the candidate did not beat the champion in canary",
    }.get(e.kind, f"the canary ended with {e.kind}" + (f" for {e.arm}" if e.arm else ""))
    if e.kind == "stop-efficacy" and not e.record_ok:
        reason = "the canary's decision record does not recompute"
    return _idle(state), (Rollback(c.version, reason, c.experiment),)


def _promote(state: LoopState, c: Candidate, reason: str) -> tuple[LoopState, tuple[Action, ...]]:
    assert c.version is not None
    return replace(_idle(state), champion=c.version), (Promote(c.version, reason, c.experiment),)


def _idle(state: LoopState) -> LoopState:
    return replace(state, phase="idle", candidate=None)
