"""The loop's controller with real parts: an embedded log, real MLflow (sqlite), training as a Kawa job in its
own process, the canary as an experiment whose decisions and delayed outcomes are simulated with a known
effect. A drift alert leads, with no person involved, to a promoted candidate and a decision record; a worse
candidate is rejected; a controller SIGKILLed after any action resumes without training or promoting twice."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.evaluation.assignment import Assigner
from kawa.evaluation.experiments import ExperimentStore
from kawa.events import new_event, to_kafka
from kawa.events.ref import EventRef
from kawa.log import EventLog, open_log
from kawa.log.base import TopicSpec
from kawa.ml import jobs
from kawa.ml.registry import Registry
from kawa.ml.trainers import logistic_regression
from kawa.monitor.outcomes import publish
from kawa.monitor.records import DECISIONS_TOPIC, OUTCOMES_TOPIC, DecisionRecord, OutcomeEvent
from kawa.retrain import decide as d
from kawa.retrain.controller import ALERTS_TOPIC, DECISION, LoopController, history
from kawa.retrain.policy import Canary, Gates, Limits, LoopPolicy, Training, Triggers
from tests.retrain.conftest import TRAINER


def policy(model: str, quality: str = "better") -> LoopPolicy:
    return LoopPolicy(
        model=model, training=Training("looptrainer:train", params={"quality": quality}),
        triggers=Triggers(alerts=("drift",)), limits=Limits(cooldown_s=3600),
        gates=Gates(canary=Canary(share=0.5, unit="card", primary_metric="caught", maturity_window_s=10.0,
                                  horizon=3000)),
    )  # fmt: skip


def alert(log: EventLog, model: str, id: str = "alert-1") -> None:
    event = new_event("kawa.monitor.alert", "/monitor", {"model": model, "kind": "drift", "feature": "amount"}, id=id)
    _, value, headers = to_kafka(event)
    producer = log.producer()
    producer.send(ALERTS_TOPIC, value, headers=headers)
    producer.close()


def canary_traffic(log: EventLog, experiment: str, p: dict[str, float], units: int = 2400) -> None:
    """What the canary's serving function records: each unit's decision under its arm, then delayed positive
    outcomes (rate ``p[arm]``); decision times are 0.1 s apart, outcomes 5 s later."""
    state = ExperimentStore(log).get(experiment)
    assigner, spec = Assigner.for_spec(state.spec), state.spec
    rng = np.random.default_rng(4)
    producer = log.producer()
    for i in range(units):
        unit, t = f"card-{i}", 1_000.0 + 0.1 * i
        chosen = assigner.assign(unit)
        ref = EventRef("/payments", f"{experiment}-tx-{i}")
        decision = DecisionRecord(ref, spec.model, 1, unit, t, score=0.5, arm=chosen.arm, propensity=chosen.propensity,
                                  experiment=spec.name, spec_hash=spec.spec_hash(), acting=True)  # fmt: skip
        publish(producer, DECISIONS_TOPIC, decision.to_event("/tests"))
        if rng.random() < p[chosen.arm]:
            publish(producer, OUTCOMES_TOPIC, OutcomeEvent(t + 5.0, ref=ref, label=1).to_event("/tests"))
    producer.close()


def drive(controller: LoopController, config: KawaConfig, log: EventLog) -> None:
    """Everything around the controller, idempotent so it can be run again after a crash: the alert, the job
    (run to its end here), the canary's traffic, then steps until the loop is idle again."""
    if not any(e.kind == "kawa.loop.input" for e in history(log, controller.model)):
        alert(log, controller.model)
    for _ in range(6):
        controller.step()
        c = controller.state.candidate
        if c is not None and controller.state.phase == "training":
            job = jobs.find(c.job, config=config)
            assert job is not None
            jobs.wait(job.id, config=config, timeout=240)
        elif c is not None and controller.state.phase == "canary" and c.experiment is not None:
            store_has_traffic = any(True for _ in _decisions_of(log, c.experiment))
            if not store_has_traffic:
                canary_traffic(log, c.experiment, {d.CHAMPION_ARM: 0.30, d.CANDIDATE_ARM: 0.45})
        elif controller.state.phase == "idle" and controller.state.trainings:
            return


def _decisions_of(log: EventLog, experiment: str) -> Any:
    from kawa.evaluation.experiments import read_to_end
    from kawa.monitor.records import decode

    for record in read_to_end(log, DECISIONS_TOPIC):
        item = decode(record)
        if isinstance(item, DecisionRecord) and item.experiment == experiment:
            yield item


def test_a_drift_alert_ends_with_a_promoted_candidate_and_a_decision_record(world: Any) -> None:
    config, log, model, champion, registry = world
    controller = LoopController(config, log, policy(model)).start()
    try:
        drive(controller, config, log)
        kinds = [type(a).__name__ for a in controller.actions]
        assert kinds == ["Train", "StartCanary", "Promote"], kinds
        candidate = controller.actions[-1].version  # type: ignore[union-attr]
        assert candidate != champion and registry.alias_target(model, "champion") == candidate
        assert registry.alias_target(model, "candidate") == candidate
        experiment = d.canary_name(model, candidate)
        assert not ExperimentStore(log).get(experiment).running
        (record,) = [e for e in history(log, model) if e.kind == DECISION]
        assert record.data["decision"] == "promote" and record.data["trigger"] == "alert-1"
        assert record.data["offline"] == {"candidate": 0.9, "champion": 0.8}
        evaluation = record.data["evaluation"]
        assert evaluation["decision"]["kind"] == "stop-efficacy" and evaluation["decision"]["arm"] == "candidate"
        assert evaluation["spec_hash"] == ExperimentStore(log).get(experiment).spec.spec_hash()
    finally:
        controller.close()
    again = LoopController(config, log, policy(model)).start()  # a restart redoes nothing
    try:
        assert again.state == controller.state and again.step() == []
        assert registry.alias_history(model, "champion")[-2:] == [champion, candidate]
    finally:
        again.close()


@pytest.mark.kafka
def test_the_loop_on_apache_kafka(config: KawaConfig, tmp_path: Path, kafka_bootstrap: str) -> None:
    """The same loop with the log on a real broker: every topic the loop reads and writes is Kafka's."""
    (tmp_path / "looptrainer.py").write_text(TRAINER)
    model = f"loop-kafka-{os.urandom(4).hex()}"
    champion = logistic_regression(model, n=120, seed=1)["version"]
    log = open_log(f"kafka://{kafka_bootstrap}", config)
    registry = Registry(config, log)
    try:
        registry.promote(model, champion)
        for topic in (DECISIONS_TOPIC, OUTCOMES_TOPIC, ALERTS_TOPIC):
            log.create_topic(TopicSpec(topic), exist_ok=True)
        controller = LoopController(config, log, policy(model)).start()
        try:
            drive(controller, config, log)  # it sends the drift alert
            assert [type(a).__name__ for a in controller.actions] == ["Train", "StartCanary", "Promote"]
            assert registry.alias_target(model, "champion") == controller.actions[-1].version  # type: ignore[union-attr]
        finally:
            controller.close()
        again = LoopController(config, log, policy(model)).start()
        assert again.state == controller.state and again.step() == []
        again.close()
    finally:
        registry.close()
        log.close()


def test_a_worse_candidate_is_rejected_offline_and_the_champion_stays(world: Any) -> None:
    config, log, model, champion, registry = world
    controller = LoopController(config, log, policy(model, quality="worse")).start()
    try:
        drive(controller, config, log)
        assert [type(a).__name__ for a in controller.actions] == ["Train", "Reject"]
        assert "trails the champion" in controller.actions[-1].reason  # type: ignore[union-attr]
        assert registry.alias_target(model, "champion") == champion
        alert(log, model, id="alert-2")  # within the cooldown: refused, and the refusal is on record
        assert [type(a).__name__ for a in controller.step()] == ["Skip"]
    finally:
        controller.close()


def _crash_after(index: int, config_home: str, log_path: str, model: str, env: dict[str, str]) -> None:
    """In a child process: run the loop and SIGKILL this process right after action ``index`` was carried
    out, before it is marked done."""
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
    drive(controller, config, log)


@pytest.mark.parametrize("crash_at", [0, 1, 2], ids=["after-train", "after-canary", "after-promote"])
def test_a_sigkilled_controller_resumes_without_training_or_promoting_twice(
    world: Any, crash_at: int, tmp_path: Path, ml_env: dict[str, str]
) -> None:
    config, log, model, _, registry = world
    env = {**ml_env, "HOME": os.environ["HOME"], "MLFLOW_CONFIG_DIR": os.environ["MLFLOW_CONFIG_DIR"]}
    child = mp.get_context("spawn").Process(
        target=_crash_after, args=(crash_at, str(config.home), str(tmp_path / "log"), model, env))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"the child was meant to die by SIGKILL, exit {child.exitcode}"
    controller = LoopController(config, log, policy(model)).start()
    try:
        drive(controller, config, log)
        assert [type(a).__name__ for a in controller.actions] == ["Train", "StartCanary", "Promote"]
        candidate = controller.actions[-1].version  # type: ignore[union-attr]
        trainings = [j for j in jobs.Scheduler(config).jobs() if j.spec.name == f"{model}-retrain-1"]
        assert len(trainings) == 1, "trained twice"
        assert registry.alias_history(model, "champion").count(candidate) == 1, "promoted twice"
        assert registry.alias_target(model, "champion") == candidate
        (record,) = [e for e in history(log, model) if e.kind == DECISION]
        assert record.data["evaluation"]["decision"]["kind"] == "stop-efficacy"  # the evidence survives the crash
        assert controller.state.candidate is None and controller.state.champion == candidate
    finally:
        controller.close()


def test_a_person_approves_from_the_cli_and_the_history_shows_every_step(world: Any, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from kawa.cli import _register
    from kawa.cli.app import app as cli

    _register()
    config, log, model, champion, registry = world
    with_approval = {"model": model, "training": {"entrypoint": "looptrainer:train"},
                     "triggers": {"alerts": ["drift"]}, "gates": {"canary": None, "approval": True}}  # fmt: skip
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(with_approval))
    controller = LoopController(config, log, LoopPolicy.from_dict(with_approval)).start()
    try:
        drive(controller, config, log)
        assert [type(a).__name__ for a in controller.actions] == ["Train", "RequestApproval"]
        version = controller.actions[-1].version  # type: ignore[union-attr]
    finally:
        controller.close()
    args = ["--log", f"embedded:{tmp_path / 'log'}", "loop"]
    result = CliRunner().invoke(cli, [*args, "approve", model, str(version), "--by", "ana",
                                      "--policy", str(tmp_path / "policy.yaml")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Promote" in result.output and registry.alias_target(model, "champion") == version != champion
    result = CliRunner().invoke(cli, [*args, "history", model])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("in   Alert alert-1" in line for line in lines) and any("act  Train" in line for line in lines)
    assert any(f"promote v{version}: approved by ana" in line for line in lines)
    (record,) = [e for e in history(log, model) if e.kind == DECISION]
    assert record.data["approver"] == "ana" and record.data["offline"] == {"candidate": 0.9, "champion": 0.8}
