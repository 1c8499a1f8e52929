"""The loop's shadow phase: the candidate scored on the champion's requests, never acted on, and valued off-policy.

The controller creates the experiment ``MODEL-shadow-vN`` in shadow mode with ``acting="champion"``: every
request an app serves through ``ctx.model("MODEL@champion", unit=key)`` gets the champion (propensity 1) and is
*also* scored by ``MODEL@candidate``, whose decision record carries the candidate's version, the arm
``candidate`` and ``acting: false`` (:func:`kawa.evaluation.serving.plan`). The outcome joiner
(:class:`~kawa.monitor.outcomes.OutcomeJoiner`, label window = the experiment's ``maturity_window_s``) matures both
decisions of an event with the same outcome; :class:`ShadowTally` pairs them per unit.

**The off-policy estimate.** Each matured decision's reward is ``-(score - y)²`` (``y`` the outcome's label or
value: the Brier score for a 0/1 outcome, the squared error otherwise; higher is better). The outcome of an
event does not depend on which model scored it (the candidate never acted), so the candidate's reward is
observed on every unit and every importance weight is 1: the estimate of (candidate - champion) is the mean of the
paired per-unit differences (:func:`kawa.evaluation.ope.paired_difference`) with its interval; its lower end is
what ``gates.ope_margin`` bounds. It is computed once, on the first ``n`` paired units, so one look is taken and
the interval keeps its level. An outcome *caused* by the decision (an intervention) cannot be valued this way: the
canary measures that.

:class:`ShadowTally` is pure (no clock, no I/O; mutable like the join state, changed only by its methods);
:class:`ShadowWatcher` is its I/O around an outcome joiner whose steps are checkpointed on the log, so a restarted
controller rebuilds the same pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kawa.evaluation.ope import OPEResult
    from kawa.log.base import EventLog
    from kawa.monitor.join import Advance, Matured
    from kawa.monitor.outcomes import OutcomeJoiner
    from kawa.monitor.records import DecisionRecord
    from kawa.retrain.policy import Canary

__all__ = ["ShadowTally", "ShadowWatcher", "create_shadow", "reward", "shadow_name", "stop_shadow"]

CHAMPION, CANDIDATE = "champion", "candidate"


def shadow_name(model: str, version: int) -> str:
    return f"{model}-shadow-v{version}"


def create_shadow(log: EventLog, model: str, version: int, champion: str, canary: Canary, units: int) -> None:
    """The shadow experiment of candidate ``version`` (``champion``: the champion's reference): the champion acts
    for every unit, ``model@candidate`` is scored on the same requests and never acted on. Idempotent."""
    from kawa.evaluation.experiments import ExperimentStore
    from kawa.evaluation.spec import Arm, ExperimentSpec

    name = shadow_name(model, version)
    store = ExperimentStore(log)
    if store.snapshot().get(name) is not None:
        return  # created before a crash
    spec = ExperimentSpec(
        name=name, model=model, unit=canary.unit, salt=name,
        arms=(Arm(CHAMPION, 0.5, model=champion), Arm(CANDIDATE, 0.5, model=f"{model}@{CANDIDATE}")),
        primary_metric=canary.primary_metric, metric_kind=canary.metric_kind,  # type: ignore[arg-type]
        maturity_window_s=canary.maturity_window_s, horizon=units, alpha=canary.alpha,
    )  # fmt: skip
    store.create(spec, shadow=True, acting=CHAMPION)


def stop_shadow(log: EventLog, model: str, version: int, reason: str) -> bool:
    """Stop candidate ``version``'s shadow experiment if it runs; whether it had one. Idempotent."""
    from kawa.evaluation.experiments import ExperimentStore

    store = ExperimentStore(log)
    state = store.snapshot().get(shadow_name(model, version))
    if state is None:
        return False
    if state.running:
        store.stop(state.name, reason)
    return True


def reward(m: Matured) -> float | None:
    """``-(score - y)²`` of a matured decision (None: it has no score or its outcome no label or value)."""
    y = m.label if m.label is not None else m.value
    score = m.decision.score
    if score is None or y is None or not math.isfinite(score) or not math.isfinite(float(y)):
        return None
    return -((score - float(y)) ** 2)


@dataclass
class _Unit:
    champion: float = 0.0
    candidate: float = 0.0
    pairs: int = 0


@dataclass
class ShadowTally:
    """The champion's and the candidate's matured rewards on the same events of experiment ``name`` (spec hash
    ``spec_hash``), paired per unit in the order units got their first pair. A decision of another experiment,
    spec, arm or candidate version is not taken; an event's decision counted once per arm."""

    name: str
    spec_hash: str
    version: int
    _events: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    _units: dict[str, _Unit] = field(default_factory=dict)  # insertion order: the order of first pairs

    def accept(self, d: DecisionRecord) -> bool:
        if d.experiment != self.name or d.spec_hash != self.spec_hash:
            return False
        return d.arm == CHAMPION or (d.arm == CANDIDATE and d.version == self.version)

    def add(self, step: Advance) -> None:
        self.add_matured(step.matured)

    def add_matured(self, matured: Iterable[Matured]) -> None:
        for m in matured:
            d = m.decision
            r = reward(m)
            if r is None or not self.accept(d):
                continue
            key = d.ref.key()
            slot = self._events.setdefault(key, {})
            if d.arm in slot:
                continue
            slot[str(d.arm)] = (d.entity, r)
            if CHAMPION in slot and CANDIDATE in slot:
                unit = self._units.setdefault(slot[CHAMPION][0], _Unit())
                unit.champion += slot[CHAMPION][1]
                unit.candidate += slot[CANDIDATE][1]
                unit.pairs += 1
                self._events[key] = {CHAMPION: slot[CHAMPION], CANDIDATE: slot[CANDIDATE]}

    @property
    def units(self) -> int:
        """Units with at least one event matured under both models."""
        return len(self._units)

    @property
    def pairs(self) -> int:
        return sum(u.pairs for u in self._units.values())

    def rewards(self, n: int | None = None) -> tuple[list[float], list[float]]:
        """The first ``n`` units' mean rewards: (candidate, champion)."""
        units = list(self._units.values())[:n]
        return [u.candidate / u.pairs for u in units], [u.champion / u.pairs for u in units]

    def estimate(self, n: int | None = None, *, alpha: float = 0.05) -> OPEResult:
        """The off-policy estimate of (candidate - champion) on the first ``n`` units, with its interval."""
        from kawa.evaluation.ope import paired_difference

        candidate, champion = self.rewards(n)
        return paired_difference(candidate, champion, alpha=alpha)


class ShadowWatcher:
    """Joins the decisions and outcomes of the shadow experiment ``name`` of candidate ``version`` on ``log``."""

    def __init__(self, log: EventLog, name: str, version: int, *, decisions: str = "decisions",
                 outcomes: str = "outcomes") -> None:  # fmt: skip
        from kawa.evaluation.experiments import ExperimentStore
        from kawa.log.base import TopicSpec

        self.log, self.name, self.version = log, name, version
        self.spec = ExperimentStore(log).get(name).spec
        self.tally = ShadowTally(name, self.spec.spec_hash(), version)
        self.topics = (decisions, outcomes)
        for topic in self.topics:
            log.create_topic(TopicSpec(topic), exist_ok=True)
        self._joiner: OutcomeJoiner | None = None

    def start(self) -> ShadowWatcher:
        from kawa.monitor.join import JoinConfig
        from kawa.monitor.outcomes import OutcomeJoiner

        self._joiner = OutcomeJoiner(
            self.log, JoinConfig(horizon=self.spec.maturity_window_s), decisions=self.topics[0],
            outcomes=self.topics[1], checkpoints=f"kawa.loop.{self.name}.{self.tally.spec_hash[:12]}.join",
            accept=self.tally.accept, on_advance=self.tally.add,
        ).start()  # fmt: skip
        return self

    def step(self) -> int:
        """Read and join what the topics hold now; the number of paired units."""
        assert self._joiner is not None, "start() the watcher first"
        self._joiner.step()
        return self.tally.units

    def close(self) -> None:
        if self._joiner is not None:
            self._joiner.close()
