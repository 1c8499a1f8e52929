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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.evaluation.experiments import TopicReader
    from kawa.evaluation.ope import OPEResult
    from kawa.events.schemas import Prediction
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


def reward(score: float | None, y: float | None) -> float | None:
    """``-(score - y)²`` (None: no score, or an outcome without label or value)."""
    if score is None or y is None or not math.isfinite(score) or not math.isfinite(float(y)):
        return None
    return -((score - float(y)) ** 2)


def _outcome(m: Matured) -> float | None:
    return float(m.label) if m.label is not None else m.value


def _single(output: list[Any] | None) -> float | None:
    """A prediction's score: its one output value (None for a vector, a batch or no output)."""
    while isinstance(output, list) and len(output) == 1:
        output = output[0]
    return float(output) if isinstance(output, int | float) and not isinstance(output, bool) else None


@dataclass
class _Unit:
    champion: float = 0.0
    candidate: float = 0.0
    pairs: int = 0


@dataclass
class ShadowTally:
    """Pairs, per event of experiment ``name`` (spec hash ``spec_hash``), the champion's matured decision with
    candidate ``version``'s shadow score, and sums the two rewards per unit (units in the order of their first
    pair). The candidate's score comes from its prediction record (``kawa.prediction``, ``acting: false``) or a
    decision record of the ``candidate`` arm, whichever arrives first; the champion's from its matured,
    acting decision record, whose outcome both are scored against. Anything else — another experiment or spec,
    another candidate version, a second copy of a record — is not counted."""

    name: str
    spec_hash: str
    version: int
    _champion: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # event -> (unit, score, y)
    _candidate: dict[str, float] = field(default_factory=dict)  # event -> the candidate's score
    _paired: set[str] = field(default_factory=set)
    _units: dict[str, _Unit] = field(default_factory=dict)

    def accept(self, d: DecisionRecord) -> bool:
        if d.experiment != self.name or d.spec_hash != self.spec_hash:
            return False
        return (d.arm == CHAMPION and d.acting is not False) or (d.arm == CANDIDATE and d.version == self.version)

    def add(self, step: Advance) -> None:
        self.add_matured(step.matured)

    def add_matured(self, matured: Iterable[Matured]) -> None:
        for m in matured:
            d = m.decision
            if not self.accept(d):
                continue
            key = d.ref.key()
            if d.arm == CHAMPION:
                y = _outcome(m)
                if reward(d.score, y) is None:
                    continue
                assert d.score is not None and y is not None
                self._champion.setdefault(key, (d.entity, d.score, y))
            elif d.score is not None and math.isfinite(d.score):
                self._candidate.setdefault(key, d.score)
            self._pair(key)

    def add_prediction(self, p: Prediction) -> None:
        if (p.experiment != self.name or p.spec_hash != self.spec_hash or p.arm != CANDIDATE
                or p.version != self.version or p.acting is not False or p.event is None):  # fmt: skip
            return
        score = _single(p.output)
        if score is not None and math.isfinite(score):
            key = p.event.key()
            self._candidate.setdefault(key, score)
            self._pair(key)

    def _pair(self, key: str) -> None:
        if key in self._paired or key not in self._champion or key not in self._candidate:
            return
        entity, champion, y = self._champion.pop(key)
        candidate = self._candidate.pop(key)
        self._paired.add(key)
        unit = self._units.setdefault(entity, _Unit())
        unit.champion += -((champion - y) ** 2)
        unit.candidate += -((candidate - y) ** 2)
        unit.pairs += 1

    @property
    def units(self) -> int:
        """Units with at least one event scored by both models whose outcome matured."""
        return len(self._units)

    @property
    def pairs(self) -> int:
        return len(self._paired)

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
    """Joins the decisions and outcomes of the shadow experiment ``name`` of candidate ``version`` on ``log``, and
    reads the candidate's shadow scores from the prediction records."""

    def __init__(self, log: EventLog, name: str, version: int, *, decisions: str = "decisions",
                 outcomes: str = "outcomes", predictions: str = "predictions") -> None:  # fmt: skip
        from kawa.evaluation.experiments import ExperimentStore
        from kawa.log.base import TopicSpec

        self.log, self.name, self.version = log, name, version
        self.spec = ExperimentStore(log).get(name).spec
        self.tally = ShadowTally(name, self.spec.spec_hash(), version)
        self.topics = (decisions, outcomes, predictions)
        for topic in self.topics:
            log.create_topic(TopicSpec(topic), exist_ok=True)
        self._joiner: OutcomeJoiner | None = None
        self._predictions: TopicReader | None = None

    def start(self) -> ShadowWatcher:
        from kawa.evaluation.experiments import TopicReader
        from kawa.monitor.join import JoinConfig
        from kawa.monitor.outcomes import OutcomeJoiner

        self._predictions = TopicReader(self.log, self.topics[2])
        self._joiner = OutcomeJoiner(
            self.log, JoinConfig(horizon=self.spec.maturity_window_s), decisions=self.topics[0],
            outcomes=self.topics[1], checkpoints=f"kawa.loop.{self.name}.{self.tally.spec_hash[:12]}.join",
            accept=self.tally.accept, on_advance=self.tally.add,
        ).start()  # fmt: skip
        return self

    def step(self) -> int:
        """Read the new prediction records, join what the topics hold now; the number of paired units."""
        from kawa.errors import EventError
        from kawa.ml.prediction_log import PREDICTION_EVENT, read_prediction

        assert self._joiner is not None and self._predictions is not None, "start() the watcher first"
        for record in self._predictions.records():
            if record.header("ce_type") != PREDICTION_EVENT.encode():
                continue
            try:
                self.tally.add_prediction(read_prediction(record))
            except EventError:
                continue  # not a prediction this reader can use; the prediction log's readers report it
        self._joiner.step()
        return self.tally.units

    def close(self) -> None:
        if self._joiner is not None:
            self._joiner.close()
        if self._predictions is not None:
            self._predictions.close()
