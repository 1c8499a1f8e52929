"""Experiments as the portal sees them: the log's experiments topic and, per experiment, its status from the
decision records (units per arm and the sample-ratio check) and its evidence from the ``kawa.evaluations`` topic
(every always-valid look and the decision record, as the Evaluator wrote them), each cached for a few seconds."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.evaluation.experiments import ExperimentState, ExperimentStore
    from kawa.evaluation.status import ExperimentStatus
    from kawa.log.base import EventLog
    from kawa.platform import Platform

STATUS_TTL_S = 2.0
EVALUATION_TTL_S = 3.0


@dataclass(frozen=True)
class Evaluation:
    """The evidence of one experiment under its current spec: its looks in order (each the ``kawa.eval.look``
    body's ``look`` — index, window, n per arm, comparisons, SRM p-value, guardrails — with that look's
    ``decision`` or None) and the decision record of its ``kawa.eval.decision`` event (None before a decision).
    ``foreign``: evaluation events naming the experiment under another spec hash (an earlier run), not shown."""

    name: str
    spec_hash: str
    looks: tuple[dict[str, Any], ...]
    record: dict[str, Any] | None
    foreign: int = 0


def read_evaluation(log: EventLog, name: str, spec_hash: str, topic: str) -> Evaluation:
    """Read ``topic`` once, keeping the looks and the decision of experiment ``name`` under ``spec_hash``.

    A look replayed after a restart is written only once by the Evaluator, but a duplicate index (an at-least-once
    redelivery) keeps the first copy, so the chart never draws a look twice."""
    from kawa.errors import EventError, TopicNotFound
    from kawa.evaluation.experiments import read_to_end
    from kawa.evaluation.service import DECISION_EVENT, LOOK_EVENT
    from kawa.events import from_record

    try:
        log.describe_topic(topic)
    except TopicNotFound:
        return Evaluation(name, spec_hash, (), None)
    looks: dict[int, dict[str, Any]] = {}
    record: dict[str, Any] | None = None
    foreign = 0
    for rec in read_to_end(log, topic):
        try:
            event = from_record(rec)
        except EventError:
            continue
        kind = event.get_type()
        if kind not in (LOOK_EVENT, DECISION_EVENT):
            continue
        raw = event.get_data()
        body = json.loads(raw) if isinstance(raw, bytes | str) else raw
        if not isinstance(body, dict) or body.get("experiment") != name:
            continue
        if body.get("spec_hash") != spec_hash:
            foreign += 1
            continue
        look = body.get("look")
        if kind == LOOK_EVENT and isinstance(look, dict) and isinstance(look.get("index"), int):
            looks.setdefault(look["index"], {**look, "decision": body.get("decision")})
        elif kind == DECISION_EVENT and isinstance(body.get("record"), dict):
            record = body["record"]
    return Evaluation(name, spec_hash, tuple(looks[i] for i in sorted(looks)), record, foreign)


class ExperimentsSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._store: ExperimentStore | None = None
        self._lock = threading.Lock()
        self._status: dict[str, tuple[float, ExperimentStatus]] = {}
        self._evaluations: dict[str, tuple[float, Evaluation]] = {}

    @property
    def store(self) -> ExperimentStore:
        with self._lock:
            if self._store is None:
                from kawa.evaluation.experiments import ExperimentStore

                self._store = ExperimentStore(self.platform.log)
            return self._store

    def list(self) -> list[ExperimentState]:
        return self.store.list()

    def status(self, name: str) -> ExperimentStatus:
        """Reads every decision record on the predictions topic (at most every STATUS_TTL_S per experiment)."""
        cached = self._status.get(name)
        if cached is not None and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        from kawa.evaluation.status import read_status

        status = read_status(self.platform.log, self.store.get(name), self.platform.config.ml.predictions_topic)
        self._status[name] = (time.monotonic(), status)
        return status

    def evaluation(self, name: str) -> Evaluation:
        """The looks and decision record of ``name`` under its current spec (read at most every
        EVALUATION_TTL_S per experiment). An unknown name is ``ExperimentNotFound``."""
        cached = self._evaluations.get(name)
        if cached is not None and time.monotonic() - cached[0] < EVALUATION_TTL_S:
            return cached[1]
        from kawa.evaluation.service import EVALUATIONS_TOPIC

        spec = self.store.get(name).spec
        evaluation = read_evaluation(self.platform.log, name, spec.spec_hash(), EVALUATIONS_TOPIC)
        self._evaluations[name] = (time.monotonic(), evaluation)
        return evaluation

    def create(self, spec: dict[str, Any], *, shadow: bool = False) -> ExperimentState:
        from kawa.evaluation.spec import ExperimentSpec

        return self.store.create(ExperimentSpec.from_dict(spec), shadow=shadow)

    def stop(self, name: str, reason: str) -> ExperimentState:
        state = self.store.stop(name, reason)
        self._status.pop(name, None)
        self._evaluations.pop(name, None)
        return state
