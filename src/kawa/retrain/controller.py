"""The loop's controller: the only part that touches the world (issue #15).

Each :meth:`LoopController.step` gathers input events — monitor alerts (``kawa.monitor.alert`` on the alerts
topic) and matured performance (``kawa.monitor.performance``: ``PerformanceDrop`` and ``Outcomes``, see
:mod:`kawa.retrain.triggers`), the shadow phase's paired units and OPE estimate (:mod:`kawa.retrain.shadow`),
evaluation decisions (``kawa.eval.decision`` on ``kawa.evaluations``, checked by recomputing them from
their looks), the candidate's training job finishing, the clock, approvals — records each one on the ``kawa.loop``
topic, feeds it to the pure :func:`~kawa.retrain.decide.decide`, and carries out the actions it returns: submit
the training job (the public jobs API), point ``model@candidate`` at the new version, serve it in shadow (the
``MODEL-shadow-vN`` experiment: the champion acts, the candidate is only scored), start its canary experiment
(and evaluate it), promote through the registry, stop the canary on a rollback.

**Crash-safe by construction.** The state is never stored: it is the fold of ``decide`` over the recorded
inputs, so a restart replays the ``kawa.loop`` topic and gets the same state and the same numbered actions. An
action is marked done on the topic after it was carried out; a restart carries out the actions not marked done.
Every action is idempotent (a job is found by its name before one is submitted, an experiment that exists is
not created again, an alias already at the version is not moved), so a SIGKILL between an action and its mark
trains once and promotes once. Upstream events are recognised by their CloudEvent id (``decide`` ignores an id
it has seen), so the controller re-reads its sources from the start after a restart without double counting.

Every promotion and rollback writes a ``kawa.loop.decision`` event: the trigger, the candidate's job, versions,
offline metrics, the canary's full evaluation decision record (every look, SRM, guardrails, rule version) and
the approver — ``kawa loop history MODEL`` prints the timeline.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from kawa.errors import KawaError
from kawa.retrain import decide as d
from kawa.retrain.policy import Canary, LoopPolicy
from kawa.retrain.triggers import PerformanceTriggers

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.evaluation.experiments import TopicReader
    from kawa.evaluation.service import Evaluator
    from kawa.log.base import EventLog, Producer
    from kawa.retrain.shadow import ShadowWatcher

LOOP_TOPIC = "kawa.loop"
ALERTS_TOPIC = "kawa.monitor.alerts"
INPUT, DONE, DECISION = "kawa.loop.input", "kawa.loop.done", "kawa.loop.decision"
_EVENTS: dict[str, type[Any]] = {cls.__name__: cls for cls in (
    d.Alert, d.PerformanceDrop, d.Tick, d.Outcomes, d.TrainingDone, d.OpeEstimate, d.ShadowProgress, d.Evaluated,
    d.Approval)}  # fmt: skip

__all__ = ["DECISION", "DONE", "INPUT", "LOOP_TOPIC", "LoopController", "LoopEntry", "history", "models", "write_entry"]


@dataclass(frozen=True)
class LoopEntry:
    """One record of a model's loop, as ``kawa loop history`` shows it."""

    kind: str
    at: float
    data: dict[str, Any]


class LoopController:
    """Runs ``policy``'s loop for its model on ``log`` with the jobs, registry and experiments of ``config``.

    ``run_jobs``: also run the job scheduler in this process (the embedded shape without ``kawa up``)."""

    def __init__(self, config: KawaConfig, log: EventLog, policy: LoopPolicy, *, run_jobs: bool = False) -> None:
        from kawa.log.base import TopicSpec

        self.config, self.log, self.policy = config, log, policy
        self.model = policy.model
        for topic in (LOOP_TOPIC, ALERTS_TOPIC):
            log.create_topic(TopicSpec(topic), exist_ok=True)
        self.state = d.LoopState()
        self.actions: list[d.Action] = []  # every action decided so far, numbered by position
        self.done: set[int] = set()
        self.inputs = 0
        self._producer = log.producer()
        self._evaluators: dict[str, Evaluator] = {}
        self._alerts_reader: TopicReader | None = None
        self._watchers: dict[str, ShadowWatcher] = {}
        t = policy.triggers
        self._monitor = PerformanceTriggers(self.model, t.performance_metric, drops=t.performance_drop is not None)
        self._scheduler: Any = None
        if run_jobs:
            from kawa.ml.jobs.scheduler import Scheduler

            self._scheduler = Scheduler(config)
            self._scheduler.start()

    # --- the loop ---------------------------------------------------------------------------------------

    def start(self) -> LoopController:
        """Rebuild the state from the recorded inputs, then carry out what was decided but not done."""
        for entry in history(self.log, self.model):
            if entry.kind == INPUT:
                self._decide(_event_from(entry.data["event"]), record=False)
            elif entry.kind == DONE:
                self.done.add(int(entry.data["action"]))
        self._catch_up()
        return self

    def step(self, now: float | None = None) -> list[d.Action]:
        """Gather the inputs available now, decide on each, carry out the actions; returns the new actions."""
        before = len(self.actions)
        now = time.time() if now is None else now
        for event in self._gather(now):
            self._decide(event, record=True)
            self._catch_up()
        return self.actions[before:]

    def submit(self, event: d.Event) -> list[d.Action]:
        """Feed one event from outside (``kawa loop approve``/``reject``, a test): recorded, decided, acted on."""
        before = len(self.actions)
        self._decide(event, record=True)
        self._catch_up()
        return self.actions[before:]

    def _decide(self, event: d.Event, *, record: bool) -> None:
        if event.id in self.state.seen:
            return
        state, actions = d.decide(self.policy, self.state, event)
        if isinstance(event, d.Tick) and state == self.state and not actions:
            return  # a tick that changed nothing is not worth a record (replaying it would change nothing either)
        if record:  # recorded before anything is acted on: a restart replays it and redoes what was not done
            self._write(INPUT, {"event": {"type": type(event).__name__, **asdict(event)}}, event.at)
        self.state = state
        self.actions.extend(actions)
        self.inputs += 1

    def _catch_up(self) -> None:
        for index, action in enumerate(self.actions):
            if index not in self.done:
                self._execute(index, action)
                self._write(DONE, {"action": index, "kind": type(action).__name__, **asdict(action)}, time.time())
                self.done.add(index)

    # --- inputs -----------------------------------------------------------------------------------------------

    def _gather(self, now: float) -> list[d.Event]:
        events: list[d.Event] = [*self._alerts(), *self._training_done(), *self._shadow(now), *self._evaluations()]
        events.append(d.Tick(f"tick-{now:.3f}", now))
        return events

    def _alerts(self) -> list[d.Event]:
        from kawa.evaluation.experiments import TopicReader
        from kawa.events import from_record

        if self._alerts_reader is None:  # one reader, going on from where it was: no group join per step
            self._alerts_reader = TopicReader(self.log, ALERTS_TOPIC)
        out: list[d.Event] = []
        for record in self._alerts_reader.records():
            event = from_record(record)
            if event.get_type() == "kawa.monitor.performance":  # every one folded (in order), even when seen
                found = self._monitor.on_event(str(event.get_id()), _time(event, record.timestamp_ms),
                                               _json(event.get_data()))  # fmt: skip
                out.extend(e for e in found if e.id not in self.state.seen)
                continue
            if event.get_type() != "kawa.monitor.alert" or str(event.get_id()) in self.state.seen:
                continue
            data = _json(event.get_data())
            if data.get("model") != self.model:
                continue
            kind = str(data.get("kind") or data.get("type") or "drift")
            out.append(d.Alert(str(event.get_id()), _time(event, record.timestamp_ms), kind=kind))
        return out

    def _training_done(self) -> list[d.Event]:
        c = self.state.candidate
        if self.state.phase != "training" or c is None:
            return []
        from kawa.ml import jobs

        job = jobs.find(c.job, config=self.config)
        if job is None or job.finished_at is None:
            return []
        result = jobs.result(job.id, config=self.config) if str(job.state) == "succeeded" else {}
        error = None if str(job.state) == "succeeded" else (job.error or f"the job ended {job.state}")
        version = result.get("version")
        return [d.TrainingDone(
            f"job-{job.id}", job.finished_at, job=c.job, version=int(version) if version is not None else None,
            candidate_metric=_float(result.get("candidate_metric")),
            champion_metric=_float(result.get("champion_metric")),
            error=error if error else (None if version is not None else "the trainer returned no version"),
        )]  # fmt: skip

    def _shadow(self, now: float) -> list[d.Event]:
        """The candidate's matured shadow units (when they grew) and, once enough matured, the OPE estimate."""
        c = self.state.candidate
        if self.state.phase != "shadow" or c is None or c.version is None:
            return []
        from kawa.retrain.shadow import shadow_name

        name = shadow_name(self.model, c.version)
        watcher = self._watcher(name, c.version)
        units = watcher.step()
        out: list[d.Event] = []
        if units > c.shadow_matured:
            out.append(d.ShadowProgress(f"shadow-{name}-{units}", now, version=c.version, matured=units))
        need = self.ope_units
        if self.policy.gates.ope_margin is not None and c.ope_lower is None and units >= need:
            result = watcher.tally.estimate(need, alpha=self._canary.alpha)
            out.append(d.OpeEstimate(f"ope-{name}", now, version=c.version, lower=result.lower,
                                     estimate=result.estimate, upper=result.upper, n=result.n))  # fmt: skip
        return out

    @property
    def ope_units(self) -> int:
        """The paired units the OPE estimate is computed on (once): ``gates.shadow_outcomes``, at least 2
        (:data:`OPE_UNITS` when the policy asks for an OPE bound without a shadow count)."""
        return max(2, self.policy.gates.shadow_outcomes or OPE_UNITS)

    @property
    def _canary(self) -> Canary:
        return self.policy.gates.canary or Canary()

    def _watcher(self, name: str, version: int) -> ShadowWatcher:
        watcher = self._watchers.get(name)
        if watcher is None:
            from kawa.retrain.shadow import ShadowWatcher

            watcher = self._watchers[name] = ShadowWatcher(self.log, name, version).start()
        return watcher

    def _evaluations(self) -> list[d.Event]:
        c = self.state.candidate
        if self.state.phase != "canary" or c is None or c.experiment is None:
            return []
        evaluator = self._evaluator(c.experiment)
        evaluator.step()
        decision = evaluator.decision
        if decision is None:
            return []
        from kawa.evaluation.decision import recompute, record

        rec = record(evaluator.spec, evaluator.state)
        ok = recompute(rec, evaluator.looks_data) == decision
        return [d.Evaluated(f"eval-{c.experiment}-{decision.look}", time.time(), experiment=c.experiment,
                            kind=decision.kind, arm=decision.arm, record_ok=ok)]  # fmt: skip

    def _evaluator(self, experiment: str) -> Evaluator:
        ev = self._evaluators.get(experiment)
        if ev is None:
            from kawa.evaluation.service import Evaluator

            ev = self._evaluators[experiment] = Evaluator(self.log, experiment, auto_stop=False).start()
        return ev

    # --- actions ------------------------------------------------------------------------------------------------

    def _execute(self, index: int, action: d.Action) -> None:
        version = getattr(action, "version", None)
        if version is not None and not isinstance(action, d.StartShadow):
            self._end_shadow(version, action)
        if isinstance(action, d.Train):
            self._train(action)
        elif isinstance(action, d.StartShadow):
            self._start_shadow(action)
        elif isinstance(action, d.StartCanary):
            self._start_canary(action)
        elif isinstance(action, d.Promote):
            self._promote(action)
        elif isinstance(action, d.Rollback):
            self._stop(action.experiment, f"rolled back: {action.reason}")
            self._decision_record("rollback", action.version, action.reason, action.experiment)
        # Reject, Skip and RequestApproval change nothing outside: the done record is their trace.

    def _train(self, action: d.Train) -> None:
        from kawa.ml import jobs

        if jobs.find(action.job, config=self.config) is not None:
            return  # submitted before a crash
        t = self.policy.training
        params = {**t.params, "model": self.model, "window_s": t.window_s, "trigger": action.trigger,
                  "parent_alias": self.policy.champion_alias}  # fmt: skip
        jobs.submit(t.entrypoint, config=self.config, cpu=t.cpu, gpu=t.gpu, params=params, name=action.job)

    def _point_candidate(self, version: int) -> None:
        from kawa.ml.registry import Registry

        registry = Registry(self.config, self.log)
        try:
            if registry.alias_target(self.model, d.CANDIDATE_ARM) != version:
                registry.set_alias(self.model, d.CANDIDATE_ARM, version)
        finally:
            registry.close()

    def _start_shadow(self, action: d.StartShadow) -> None:
        from kawa.retrain.shadow import create_shadow

        self._point_candidate(action.version)
        create_shadow(self.log, self.model, action.version, f"{self.model}@{self.policy.champion_alias}",
                      self._canary, self.ope_units)  # fmt: skip

    def _end_shadow(self, version: int, action: d.Action) -> None:
        """Stop the candidate's shadow experiment (if it had one) when its shadow phase ended with ``action``."""
        from kawa.retrain.shadow import stop_shadow

        if stop_shadow(self.log, self.model, version, f"shadow phase ended: {type(action).__name__}") and \
                isinstance(action, d.Reject):  # fmt: skip
            self._decision_record("reject", version, action.reason, None)

    def _start_canary(self, action: d.StartCanary) -> None:
        from kawa.evaluation.experiments import ExperimentStore
        from kawa.evaluation.spec import Arm, ExperimentSpec, Guardrail

        canary = self.policy.gates.canary
        assert canary is not None
        self._point_candidate(action.version)
        spec = ExperimentSpec(
            name=action.experiment, model=self.model, unit=canary.unit, salt=action.experiment,
            arms=(Arm(d.CHAMPION_ARM, round(1 - canary.share, 12), model=f"{self.model}@{self.policy.champion_alias}"),
                  Arm(d.CANDIDATE_ARM, canary.share, model=f"{self.model}@{d.CANDIDATE_ARM}")),
            primary_metric=canary.primary_metric, metric_kind=canary.metric_kind,  # type: ignore[arg-type]
            higher_is_better=canary.higher_is_better, maturity_window_s=canary.maturity_window_s,
            horizon=canary.horizon, max_sample=canary.max_sample, alpha=canary.alpha,
            guardrails=tuple(Guardrail(**g) for g in canary.guardrails),
        )  # fmt: skip
        store = ExperimentStore(self.log)
        existing = store.snapshot().get(action.experiment)
        if existing is None:
            store.create(spec)

    def _promote(self, action: d.Promote) -> None:
        from kawa.ml.registry import Registry

        registry = Registry(self.config, self.log)
        try:
            if registry.alias_target(self.model, self.policy.champion_alias) != action.version:
                registry.promote(self.model, action.version, self.policy.champion_alias)
        finally:
            registry.close()
        self._stop(action.experiment, f"promoted: {action.reason}")
        self._decision_record("promote", action.version, action.reason, action.experiment)

    def _stop(self, experiment: str | None, reason: str) -> None:
        if experiment is None:
            return
        from kawa.evaluation.experiments import ExperimentStore

        store = ExperimentStore(self.log)
        state = store.snapshot().get(experiment)
        if state is not None and state.running:
            store.stop(experiment, reason)

    def _decision_record(self, kind: str, version: int, reason: str, experiment: str | None) -> None:
        for entry in history(self.log, self.model):
            if entry.kind == DECISION and entry.data.get("version") == version and entry.data.get("decision") == kind:
                return  # written before a crash: the record is append-only, once per decision
        c = _candidate_inputs(self.log, self.model, version)
        evaluation = None
        if experiment is not None:
            from kawa.evaluation.decision import record

            ev = self._evaluator(experiment)  # after a restart: rebuilt from its recorded looks
            evaluation = json.loads(record(ev.spec, ev.state).to_json())
        self._write(DECISION, {"decision": kind, "version": version, "reason": reason, "experiment": experiment,
                               "rule_version": RULE_VERSION, "trigger": c.get("trigger"), "job": c.get("job"),
                               "offline": c.get("offline"), "approver": c.get("approver"),
                               "shadow": c.get("shadow"), "evaluation": evaluation}, time.time())  # fmt: skip

    # --- plumbing -------------------------------------------------------------------------------------------

    def _write(self, kind: str, data: dict[str, Any], at: float) -> None:
        write_entry(self._producer, self.model, kind, data, at)

    def close(self) -> None:
        for ev in self._evaluators.values():
            ev.close()
        for watcher in self._watchers.values():
            watcher.close()
        if self._alerts_reader is not None:
            self._alerts_reader.close()
        if self._scheduler is not None:
            self._scheduler.stop()
        self._producer.close()


RULE_VERSION = "kawa.retrain.decide/1"
OPE_UNITS = 200
"""Paired shadow units the OPE bound is computed on when the policy gives no ``gates.shadow_outcomes``."""


def write_entry(producer: Producer, model: str, kind: str, data: dict[str, Any], at: float) -> None:
    """Append one loop record (``kawa.loop.input|done|decision``) of ``model`` and wait for the log."""
    from kawa.events import new_event, to_kafka

    event = new_event(kind, f"kawa/loop/{model}", {"model": model, "at": at, **data}, subject=model)
    _, value, headers = to_kafka(event)
    producer.send(LOOP_TOPIC, value, key=model.encode(), headers=headers)


def history(log: EventLog, model: str) -> list[LoopEntry]:
    """Every loop record of ``model``, in order."""
    from kawa.errors import TopicNotFound
    from kawa.evaluation.experiments import read_to_end
    from kawa.events import from_record

    out = []
    try:
        log.describe_topic(LOOP_TOPIC)
    except TopicNotFound:
        return []
    for record in read_to_end(log, LOOP_TOPIC):
        event = from_record(record)
        data = _json(event.get_data())
        if data.get("model") == model and str(event.get_type()).startswith("kawa.loop."):
            out.append(LoopEntry(str(event.get_type()), float(data.get("at", 0.0)), data))
    return out


def models(log: EventLog) -> list[str]:
    """The models that have a loop history."""
    from kawa.errors import TopicNotFound
    from kawa.evaluation.experiments import read_to_end

    try:
        log.describe_topic(LOOP_TOPIC)
    except TopicNotFound:
        return []
    return sorted({r.key.decode() for r in read_to_end(log, LOOP_TOPIC) if r.key})


def _candidate_inputs(log: EventLog, model: str, version: int) -> dict[str, Any]:
    """The trigger, job, offline metrics and approver of the candidate ``version``, from the loop's inputs."""
    out: dict[str, Any] = {}
    trigger = None
    for entry in history(log, model):
        if entry.kind == DONE and entry.data.get("kind") == "Train":
            trigger, out["job"] = entry.data.get("trigger"), entry.data.get("job")
        if entry.kind == INPUT:
            e = entry.data["event"]
            if e.get("type") == "TrainingDone" and e.get("version") == version:
                out["trigger"] = trigger
                out["offline"] = {"candidate": e.get("candidate_metric"), "champion": e.get("champion_metric")}
            if e.get("type") == "Approval" and e.get("version") == version:
                out["approver"] = e.get("by")
            if e.get("type") in ("ShadowProgress", "OpeEstimate") and e.get("version") == version:
                from kawa.retrain.shadow import shadow_name

                shadow = out.setdefault("shadow", {"experiment": shadow_name(model, version), "matured": 0,
                                                   "ope": None})  # fmt: skip
                if e["type"] == "ShadowProgress":
                    shadow["matured"] = max(shadow["matured"], int(e.get("matured", 0)))
                else:
                    shadow["ope"] = {k: e.get(k) for k in ("estimate", "lower", "upper", "n")}
                    shadow["ope"]["method"] = "paired"
    return out


def _event_from(data: dict[str, Any]) -> d.Event:
    kind = _EVENTS.get(str(data.get("type")))
    if kind is None:
        raise KawaError(f"the loop topic holds an input of unknown type {data.get('type')!r}; was it written by a "
                        "newer Kawa?")
    names = {f.name for f in fields(kind)}
    event: d.Event = kind(**{k: v for k, v in data.items() if k in names})
    return event


def _json(raw: Any) -> dict[str, Any]:
    data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    return data if isinstance(data, dict) else {}


def _time(event: Any, fallback_ms: int) -> float:
    """The event's own time, else the record's."""
    when = event.get_time()
    return float(when.timestamp()) if when is not None else fallback_ms / 1000


def _float(x: Any) -> float | None:
    return None if x is None else float(x)
