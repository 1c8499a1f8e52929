"""The loop's shadow phase and its monitoring triggers with real parts: an embedded log, MLflow on sqlite, training
as a Kawa job in its own process. The shadow traffic is what the serving path records under the shadow experiment
(routed by the real :func:`kawa.evaluation.serving.plan`): the champion acts (its decision record), the candidate
is scored on the same events (its prediction record, written by the real prediction log); outcomes arrive later,
joined by the event."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.evaluation.experiments import ExperimentStore
from kawa.evaluation.serving import plan
from kawa.events.ref import EventRef
from kawa.log import EventLog, open_log
from kawa.ml import jobs
from kawa.ml.prediction_log import PredictionLogger
from kawa.monitor.outcomes import publish
from kawa.monitor.records import DECISIONS_TOPIC, OUTCOMES_TOPIC, DecisionRecord, OutcomeEvent
from kawa.monitor.status import PERFORMANCE_EVENT, monitor_event
from kawa.retrain import decide as d
from kawa.retrain.controller import ALERTS_TOPIC, DECISION, LoopController, history
from kawa.retrain.policy import Canary, Gates, Limits, LoopPolicy, Training, Triggers
from kawa.retrain.shadow import shadow_name
from kawa.retrain.timeline import timeline
from tests.retrain.test_controller import alert, canary_traffic

SHADOW_UNITS = 300


def policy(model: str, *, canary: bool = True) -> LoopPolicy:
    return LoopPolicy(
        model=model, training=Training("looptrainer:train", params={"quality": "better"}),
        triggers=Triggers(alerts=("drift",)), limits=Limits(cooldown_s=3600),
        gates=Gates(shadow_outcomes=SHADOW_UNITS, ope_margin=0.01,
                    canary=Canary(share=0.5, unit="card", primary_metric="caught", maturity_window_s=10.0,
                                  horizon=3000) if canary else None),
    )  # fmt: skip


def shadow_traffic(log: EventLog, model: str, version: int, champion: int, candidate_better: bool,
                   units: int = 400) -> None:  # fmt: skip
    """What serving records under the shadow experiment, routed by the real ``plan``: per event the champion's
    acting decision (``ctx.decide``'s record) and the candidate's shadow score (the prediction log's
    ``kawa.prediction`` record, ``acting: false``); 30 % of events are positive, their outcome observed 5 s later.
    The better model scores positives near 0.9 and negatives near 0.1, the worse one near 0.5 for both."""
    state = ExperimentStore(log).get(shadow_name(model, version))
    rng = np.random.default_rng(11)
    producer, predictions = log.producer(), PredictionLogger(log)
    for i in range(units):
        unit, t, positive = f"card-{i}", 1_000.0 + 0.1 * i, bool(rng.random() < 0.3)
        route = plan(state, f"{model}@champion", unit)
        ref = EventRef("/payments", f"shadow-{version}-tx-{i}")
        good = float(np.clip((0.9 if positive else 0.1) + rng.normal(0, 0.05), 0, 1))
        poor = float(np.clip(0.5 + rng.normal(0, 0.05), 0, 1))
        scores = {"champion": poor, "candidate": good} if candidate_better else {"champion": good, "candidate": poor}
        acting = route.allocation
        publish(producer, DECISIONS_TOPIC, DecisionRecord(
            ref, model, champion, unit, t, score=scores[acting.arm], arm=acting.arm, propensity=acting.propensity,
            experiment=acting.experiment, spec_hash=acting.spec_hash, acting=acting.acting).to_event("/tests"))
        ((_, shadow),) = route.shadows
        predictions.record(model, version, np.zeros((1, 3)), np.array([[scores[shadow.arm]]]), 0.001, event=ref,
                           allocation=shadow)  # fmt: skip
        if positive:
            publish(producer, OUTCOMES_TOPIC, OutcomeEvent(t + 5.0, ref=ref, label=1).to_event("/tests"))
    predictions.close()
    producer.close()


def drive(controller: LoopController, config: KawaConfig, log: EventLog, candidate_better: bool,
          champion: int) -> None:  # fmt: skip
    """The world around the controller, idempotent (it can run again after a crash)."""
    if not any(e.kind == "kawa.loop.input" for e in history(log, controller.model)):
        alert(log, controller.model)
    for _ in range(8):
        controller.step()
        state, c = controller.state, controller.state.candidate
        if c is not None and state.phase == "training":
            job = jobs.find(c.job, config=config)
            assert job is not None
            jobs.wait(job.id, config=config, timeout=240)
        elif c is not None and c.version is not None and state.phase == "shadow":
            name = shadow_name(controller.model, c.version)
            if ExperimentStore(log).get(name).running and not _has_decisions(log, name):
                shadow_traffic(log, controller.model, c.version, champion, candidate_better)
        elif c is not None and state.phase == "canary" and c.experiment is not None:
            if not _has_decisions(log, c.experiment):
                canary_traffic(log, c.experiment, {d.CHAMPION_ARM: 0.30, d.CANDIDATE_ARM: 0.45})
        elif state.phase == "idle" and state.trainings:
            return


def _has_decisions(log: EventLog, experiment: str) -> bool:
    from kawa.evaluation.experiments import read_to_end
    from kawa.monitor.records import decode

    return any(isinstance(item := decode(r), DecisionRecord) and item.experiment == experiment
               for r in read_to_end(log, DECISIONS_TOPIC))  # fmt: skip


def test_a_better_candidate_passes_its_shadow_then_its_canary_and_the_record_holds_the_ope(world: Any) -> None:
    config, log, model, champion, registry = world
    controller = LoopController(config, log, policy(model)).start()
    try:
        drive(controller, config, log, candidate_better=True, champion=champion)
        kinds = [type(a).__name__ for a in controller.actions]
        assert kinds == ["Train", "StartShadow", "StartCanary", "Promote"], kinds
        version = controller.actions[1].version  # type: ignore[union-attr]
        assert registry.alias_target(model, "champion") == version != champion
        shadow = ExperimentStore(log).get(shadow_name(model, version))
        assert not shadow.running and shadow.acting == "champion"  # stopped when the canary started
        inputs = [e.data["event"] for e in history(log, model) if e.kind == "kawa.loop.input"]
        progress = [e for e in inputs if e["type"] == "ShadowProgress"]
        (ope,) = [e for e in inputs if e["type"] == "OpeEstimate"]
        assert progress and max(e["matured"] for e in progress) >= SHADOW_UNITS
        assert ope["n"] == SHADOW_UNITS and ope["lower"] > 0 and ope["lower"] <= ope["estimate"] <= ope["upper"]
        (record,) = [e for e in history(log, model) if e.kind == DECISION]
        assert record.data["decision"] == "promote"
        assert record.data["shadow"]["experiment"] == shadow.name
        assert record.data["shadow"]["ope"]["lower"] == ope["lower"]
        assert record.data["shadow"]["matured"] >= SHADOW_UNITS
        assert record.data["evaluation"]["decision"]["kind"] == "stop-efficacy"
        (episode,) = timeline(model, history(log, model)).episodes  # what the portal's /loop page shows
        kinds = [n.kind for n in episode.nodes]
        assert kinds.count("offline") == kinds.count("shadow") == kinds.count("ope") == 1
        assert kinds.index("offline") < kinds.index("shadow") < kinds.index("ope") < kinds.index("canary"), kinds
        assert f"{SHADOW_UNITS} units" in episode.nodes[kinds.index("ope")].summary
    finally:
        controller.close()
    again = LoopController(config, log, policy(model)).start()  # a restart redoes nothing
    try:
        assert again.state == controller.state and again.step() == []
    finally:
        again.close()


def test_a_candidate_worse_in_shadow_is_rejected_before_it_serves_anyone(world: Any) -> None:
    config, log, model, champion, registry = world
    controller = LoopController(config, log, policy(model)).start()
    try:
        drive(controller, config, log, candidate_better=False, champion=champion)
        kinds = [type(a).__name__ for a in controller.actions]
        assert kinds == ["Train", "StartShadow", "Reject"], kinds
        reject = controller.actions[-1]
        assert isinstance(reject, d.Reject) and "off-policy lower bound" in reject.reason
        assert registry.alias_target(model, "champion") == champion
        version = reject.version
        assert version is not None and not ExperimentStore(log).get(shadow_name(model, version)).running
        assert d.canary_name(model, version) not in ExperimentStore(log).snapshot()  # it never served in canary
        (record,) = [e for e in history(log, model) if e.kind == DECISION]
        assert record.data["decision"] == "reject" and record.data["shadow"]["ope"]["upper"] < 0
        assert record.data["offline"] == {"candidate": 0.9, "champion": 0.8}  # it claimed better offline
    finally:
        controller.close()


def _crash_after(index: int, config_home: str, log_path: str, model: str, champion: int, env: dict[str, str]) -> None:
    """In a child process: run the loop and SIGKILL this process right after action ``index`` was carried out,
    before it is marked done."""
    os.environ.update(env)
    from kawa.config import load_config

    config = load_config(home=config_home)
    log = open_log(f"embedded:{log_path}", config)
    original = LoopController._execute

    def execute_then_die(self: LoopController, i: int, action: Any) -> None:
        original(self, i, action)
        if i == index:
            os.kill(os.getpid(), signal.SIGKILL)

    LoopController._execute = execute_then_die  # type: ignore[method-assign]
    controller = LoopController(config, log, policy(model)).start()
    drive(controller, config, log, candidate_better=True, champion=champion)


@pytest.mark.parametrize("crash_at", [1, 2], ids=["after-start-shadow", "after-shadow-to-canary"])
def test_a_controller_sigkilled_in_the_shadow_phase_resumes_with_its_candidate(
    world: Any, crash_at: int, tmp_path: Path, ml_env: dict[str, str]
) -> None:
    config, log, model, champion, registry = world
    env = {**ml_env, "HOME": os.environ["HOME"], "MLFLOW_CONFIG_DIR": os.environ["MLFLOW_CONFIG_DIR"]}
    child = mp.get_context("spawn").Process(
        target=_crash_after, args=(crash_at, str(config.home), str(tmp_path / "log"), model, champion, env))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"the child was meant to die by SIGKILL, exit {child.exitcode}"
    before = LoopController(config, log, policy(model)).start()
    try:
        # what the child decided survives: the same candidate, in shadow or already past it
        assert before.state.candidate is not None and before.state.candidate.version is not None
        version = before.state.candidate.version
        drive(before, config, log, candidate_better=True, champion=champion)
        assert [type(a).__name__ for a in before.actions] == ["Train", "StartShadow", "StartCanary", "Promote"]
        assert before.actions[-1].version == version  # type: ignore[union-attr]
        trainings = [j for j in jobs.Scheduler(config).jobs() if j.spec.name == f"{model}-retrain-1"]
        assert len(trainings) == 1, "trained twice"
        shadows = [s for s in ExperimentStore(log).list() if s.spec.model == model and s.acting is not None]
        assert [s.name for s in shadows] == [shadow_name(model, version)] and not shadows[0].running
        assert registry.alias_history(model, "champion").count(version) == 1, "promoted twice"
        inputs = [e.data["event"] for e in history(log, model) if e.kind == "kawa.loop.input"]
        assert len([e for e in inputs if e["type"] == "OpeEstimate"]) == 1
    finally:
        before.close()


def performance(log: EventLog, model: str, version: int, start: float, n: int, auroc: tuple[float, float, float],
                id: str) -> None:  # fmt: skip
    """A ``kawa.monitor.performance`` event as the monitoring service writes it."""
    est, low, high = auroc
    data = {"cohort": {"start": start, "end": start + 300, "arm": None}, "n": n, "positives": n // 4,
            "metrics": {"auroc": {"estimate": est, "low": low, "high": high, "level": 0.95}}}
    event = monitor_event(PERFORMANCE_EVENT, id, model, version, data, start + 300).to_cloudevent()
    producer = log.producer()
    publish(producer, ALERTS_TOPIC, event)
    producer.close()


def test_a_matured_performance_drop_from_monitoring_starts_a_training_once_enough_outcomes_matured(
    world: Any,
) -> None:
    config, log, model, champion, _ = world
    p = LoopPolicy(model=model, training=Training("looptrainer:train"),
                   triggers=Triggers(performance_drop=0.05), limits=Limits(cooldown_s=3600, min_outcomes=400),
                   gates=Gates(canary=None, approval=True))  # fmt: skip
    controller = LoopController(config, log, p).start()
    try:
        performance(log, model, champion, 0.0, 300, (0.86, 0.82, 0.90), "perf-1")  # the reference cohort
        performance(log, model, champion, 300.0, 50, (0.85, 0.75, 0.95), "perf-2")  # no real drop
        assert [type(a).__name__ for a in controller.step()] == []
        performance(log, model, champion, 600.0, 40, (0.70, 0.62, 0.78), "perf-3")  # real, but 390 matured
        (skip,) = controller.step()
        assert isinstance(skip, d.Skip) and "390 matured outcomes" in skip.reason
        performance(log, model, champion, 600.0, 120, (0.69, 0.64, 0.74), "perf-4")  # the cohort grew: 470
        (train,) = controller.step()
        assert isinstance(train, d.Train) and train.trigger == "drop-perf-4"
        assert controller.state.matured == 470
    finally:
        controller.close()
    again = LoopController(config, log, p).start()  # re-reads the monitor's events without counting them twice
    try:
        assert again.step() == [] and again.state.matured == 470 and again.state.trainings == 1
        performance(log, model, champion, 600.0, 130, (0.69, 0.64, 0.74), "perf-5")  # the same cohort, 10 more
        (skip,) = again.step()  # a candidate is in flight
        assert isinstance(skip, d.Skip) and again.state.matured == 480
    finally:
        again.close()


def test_new_labelled_outcomes_from_monitoring_start_a_training(world: Any) -> None:
    config, log, model, champion, _ = world
    p = LoopPolicy(model=model, training=Training("looptrainer:train"), triggers=Triggers(new_outcomes=500),
                   gates=Gates(canary=None, approval=True))  # fmt: skip
    controller = LoopController(config, log, p).start()
    try:
        performance(log, model, champion, 0.0, 300, (0.86, 0.82, 0.90), "perf-1")
        assert controller.step() == []
        performance(log, model, champion, 300.0, 250, (0.86, 0.82, 0.90), "perf-2")
        (train,) = controller.step()
        assert isinstance(train, d.Train) and train.trigger == "outcomes-perf-2"
    finally:
        controller.close()


@pytest.mark.kafka
def test_the_shadow_phase_on_apache_kafka(config: KawaConfig, tmp_path: Path, kafka_bootstrap: str) -> None:
    """The shadow phase with every topic on a real broker: decisions, predictions, outcomes, the joiner's
    checkpoints, the experiments and the loop's own records."""
    from kawa.log.base import TopicSpec
    from kawa.ml.registry import Registry
    from kawa.ml.trainers import logistic_regression
    from tests.retrain.conftest import TRAINER

    (tmp_path / "looptrainer.py").write_text(TRAINER)
    model = f"loop-shadow-kafka-{os.urandom(4).hex()}"
    champion = logistic_regression(model, n=120, seed=1)["version"]
    log = open_log(f"kafka://{kafka_bootstrap}", config)
    registry = Registry(config, log)
    try:
        registry.promote(model, champion)
        for topic in (DECISIONS_TOPIC, OUTCOMES_TOPIC, ALERTS_TOPIC, "predictions"):
            log.create_topic(TopicSpec(topic), exist_ok=True)
        controller = LoopController(config, log, policy(model)).start()
        try:
            drive(controller, config, log, candidate_better=True, champion=champion)
            assert [type(a).__name__ for a in controller.actions] == ["Train", "StartShadow", "StartCanary", "Promote"]
            assert registry.alias_target(model, "champion") == controller.actions[-1].version  # type: ignore[union-attr]
            (record,) = [e for e in history(log, model) if e.kind == DECISION]
            assert record.data["shadow"]["ope"]["lower"] > 0
        finally:
            controller.close()
        again = LoopController(config, log, policy(model)).start()
        assert again.state == controller.state and again.step() == []
        again.close()
    finally:
        registry.close()
        log.close()
