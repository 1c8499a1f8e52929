"""The evaluator: the one I/O piece of continuous causal evaluation for one experiment.

Each :meth:`Evaluator.step` lets the outcome joiner read the decision and outcome topics, folds the matured
decisions of the experiment's units into its :class:`~kawa.evaluation.cohorts.Cohorts`, takes one always-valid
look (:func:`kawa.evaluation.decision.look`) and writes it to the ``kawa.evaluations`` topic as a
``kawa.eval.look`` event, with the look's data, so anyone can recompute it. When a look decides (a challenger
wins, every challenger is worse, a guardrail is breached, the split is broken, the sample is spent) it writes a
``kawa.eval.decision`` event holding the whole :class:`~kawa.evaluation.decision.DecisionRecord` and, with
``auto_stop``, stops the experiment with the decision's reason. The retraining loop acts on those events.

Restart-safe: the joiner replays its recorded steps (so the cohorts are rebuilt exactly), and the earlier
looks of this experiment and spec are read back from the evaluations topic and replayed through ``look``; a
replayed look that does not reproduce its recorded result is an error (the record and the data disagree).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Literal

from kawa.evaluation.cohorts import Cohorts
from kawa.evaluation.decision import ArmStats, EvalState, Look, LookData, jsonable, look, record
from kawa.evaluation.errors import EvaluationError, RecordMismatch
from kawa.evaluation.experiments import ExperimentStore, read_to_end

if TYPE_CHECKING:
    from kawa.evaluation.decision import Decision
    from kawa.log.base import EventLog
    from kawa.monitor.outcomes import OutcomeJoiner

EVALUATIONS_TOPIC = "kawa.evaluations"
LOOK_EVENT = "kawa.eval.look"
DECISION_EVENT = "kawa.eval.decision"

__all__ = ["DECISION_EVENT", "EVALUATIONS_TOPIC", "LOOK_EVENT", "Evaluator"]


class Evaluator:
    """Evaluates the experiment ``name`` from ``decisions`` and ``outcomes`` on ``log``.

    ``join_by``: outcomes name their decision's event (``ref``) or an entity and time (``entity``); the label
    window is the spec's ``maturity_window_s``; ``missing``: a decision whose outcome never came counts as a
    negative (the default: "no sepsis reported" is no sepsis) or is left out."""

    def __init__(
        self,
        log: EventLog,
        name: str,
        *,
        decisions: str = "decisions",
        outcomes: str = "outcomes",
        evaluations: str = EVALUATIONS_TOPIC,
        join_by: Literal["ref", "entity"] = "ref",
        missing: Literal["negative", "exclude"] = "negative",
        grace_s: float = 0.0,
        auto_stop: bool = True,
    ) -> None:
        from kawa.log.base import TopicSpec

        self.log, self.name = log, name
        self.store = ExperimentStore(log)
        self.experiment = self.store.get(name)
        self.spec = self.experiment.spec
        self.topics = (decisions, outcomes)
        self.evaluations = evaluations
        self.join_by, self.missing, self.grace_s = join_by, missing, grace_s
        self.auto_stop = auto_stop
        self.cohorts = Cohorts(self.spec)
        self.state = EvalState()
        self.looks_data: list[LookData] = []
        for topic in (decisions, outcomes, evaluations):
            log.create_topic(TopicSpec(topic), exist_ok=True)
        self._joiner: OutcomeJoiner | None = None
        self._producer = log.producer()

    @property
    def decision(self) -> Decision | None:
        return self.state.decision

    def start(self) -> Evaluator:
        """Rebuild: the join and the cohorts from the joiner's recorded steps, then the looks from the topic."""
        from kawa.monitor.join import JoinConfig
        from kawa.monitor.outcomes import OutcomeJoiner

        config = JoinConfig(horizon=self.spec.maturity_window_s, by=self.join_by, missing=self.missing,
                            grace=self.grace_s)  # fmt: skip
        self._joiner = OutcomeJoiner(
            self.log, config, decisions=self.topics[0], outcomes=self.topics[1],
            checkpoints=f"kawa.eval.{self.name}.{self.spec.spec_hash()[:12]}.join",
            accept=self.cohorts.add_decision, on_advance=self.cohorts.add_advance, on_failure=self.cohorts.add_failure,
        ).start()  # fmt: skip
        for recorded, data in self._recorded_looks():
            self._look(data, recorded=recorded)
        return self

    def step(self, watermark: float | None = None) -> Look | None:
        """Read, join and take one look (None when no unit was assigned yet, or the experiment was decided)."""
        if self._joiner is None:
            raise EvaluationError("start() the evaluator before stepping it")
        self._joiner.step(watermark)
        if self.state.decision is not None or self.cohorts.units == 0:
            return None
        return self._look(self.cohorts.look_data())

    def _look(self, data: LookData, *, recorded: dict[str, Any] | None = None) -> Look:
        self.state, the_look, decision = look(self.state, self.spec, data)
        self.looks_data.append(data)
        if recorded is not None:
            if _look_json(the_look) != recorded["look"]:
                raise RecordMismatch(f"look {the_look.index} of experiment {self.name!r} does not reproduce from "
                                     "its recorded data; the evaluations topic and the rule disagree")
            return the_look
        self._publish(LOOK_EVENT, {"experiment": self.name, "spec_hash": self.spec.spec_hash(),
                                   "look": _look_json(the_look), "data": _data_json(data),
                                   "decision": _decision_json(decision),
                                   "unmeasured_guardrails": list(self.cohorts.unmeasured())})  # fmt: skip
        if decision is not None:
            versions = {a: ",".join(str(v) for v in sorted(vs)) for a, vs in self.cohorts.versions.items() if vs}
            rec = record(self.spec, self.state, versions)
            self._publish(DECISION_EVENT, {"experiment": self.name, "spec_hash": self.spec.spec_hash(),
                                           "record": json.loads(rec.to_json())})  # fmt: skip
            if self.auto_stop and self.store.get(self.name).running:
                self.store.stop(self.name, f"{decision.kind}: {decision.reason}")
        return the_look

    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        from kawa.events import new_event, to_kafka

        event = new_event(kind, f"kawa/evaluations/{self.name}", data, subject=self.name)
        _, value, headers = to_kafka(event)
        self._producer.send(self.evaluations, value, key=self.name.encode(), headers=headers)

    def _recorded_looks(self) -> list[tuple[dict[str, Any], LookData]]:
        from kawa.events import from_record

        out = []
        for rec in read_to_end(self.log, self.evaluations):
            event = from_record(rec)
            if event.get_type() != LOOK_EVENT:
                continue
            raw = event.get_data()
            body = json.loads(raw) if isinstance(raw, bytes | str) else raw
            if not isinstance(body, dict):
                raise EvaluationError(f"record {rec.offset} of {self.evaluations!r} is a look without a JSON body")
            if body.get("experiment") == self.name and body.get("spec_hash") == self.spec.spec_hash():
                out.append((body, _data_from_json(body["data"])))
        return out

    def close(self) -> None:
        if self._joiner is not None:
            self._joiner.close()
        self._producer.close()


def _look_json(the_look: Look) -> dict[str, Any]:
    """The look as strict JSON values (infinite bounds as "inf"/"-inf", as decision records write them)."""
    out: dict[str, Any] = json.loads(json.dumps(jsonable(asdict(the_look)), allow_nan=False))
    return out


def _data_json(data: LookData) -> dict[str, Any]:
    return {"arms": {a: {"n": s.n, "mean": s.mean, "variance": s.variance} for a, s in data.arms.items()},
            "assigned": dict(data.assigned), "window": list(data.window),
            "guardrails": {k: dict(v) for k, v in data.guardrails.items()}}  # fmt: skip


def _data_from_json(d: dict[str, Any]) -> LookData:
    return LookData(
        arms={a: ArmStats(int(s["n"]), float(s["mean"]), float(s["variance"])) for a, s in d["arms"].items()},
        assigned={a: int(n) for a, n in d["assigned"].items()}, window=(float(d["window"][0]), float(d["window"][1])),
        guardrails={k: {a: float(x) for a, x in v.items()} for k, v in d.get("guardrails", {}).items()},
    )  # fmt: skip


def _decision_json(decision: Decision | None) -> dict[str, Any] | None:
    return None if decision is None else dict(jsonable(asdict(decision)))
