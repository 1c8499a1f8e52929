"""``kawa up``'s loop service: it evaluates running experiments to a decision and steps the configured loops,
with no other command; a log that never had an experiment gets no topic."""

from __future__ import annotations

from pathlib import Path

from kawa.config import load_config
from kawa.evaluation.experiments import EXPERIMENTS_TOPIC, ExperimentStore
from kawa.platform import Platform
from kawa.retrain.service import LoopService, build_service
from tests.evaluation.test_service import simulate, spec
from tests.waiting import wait_for


def test_the_service_evaluates_a_running_experiment_to_its_decision(tmp_path: Path) -> None:
    config = load_config(home=str(tmp_path / ".kawa"), loop={"interval_s": 0.2}, portal={"enabled": False})
    platform = Platform(config)
    try:
        service = build_service(platform)
        assert isinstance(service, LoopService)
        service.step()
        assert EXPERIMENTS_TOPIC not in platform.log.list_topics()  # nothing was ever created: nothing to read
        s = spec("service")
        ExperimentStore(platform.log).create(s)
        simulate(platform.log, s, 2400, {"champion": 0.2, "challenger": 0.5}, seed=8)
        service.start()
        wait_for(lambda: not ExperimentStore(platform.log).get(s.name).running, timeout=60)
        assert ExperimentStore(platform.log).get(s.name).reason.startswith("stop-efficacy: arm 'challenger'")
        wait_for(lambda: s.name not in service.evaluators, timeout=60)  # a decided experiment's evaluator is closed
        service.stop()
    finally:
        platform.stop()


def test_an_invalid_policy_stops_the_start_with_the_field_to_fix(tmp_path: Path) -> None:
    import pytest

    from kawa.retrain.policy import InvalidPolicy

    config = load_config(home=str(tmp_path / ".kawa"), portal={"enabled": False},
                         loop={"policies": [{"model": "m", "training": {"entrypoint": "m:f"}}]})  # fmt: skip
    platform = Platform(config)
    try:
        service = build_service(platform)
        assert service is not None
        with pytest.raises(InvalidPolicy, match="at least one trigger"):
            service.start()
    finally:
        platform.stop()


def test_each_configured_policy_gets_a_loop_that_is_stepped(tmp_path: Path) -> None:
    from kawa.events import new_event, to_kafka
    from kawa.retrain.controller import ALERTS_TOPIC

    policy = {"model": "fraud", "training": {"entrypoint": "nowhere:train"}, "triggers": {"alerts": ["drift"]},
              "limits": {"min_outcomes": 10}}  # fmt: skip
    config = load_config(home=str(tmp_path / ".kawa"), portal={"enabled": False},
                         loop={"policies": [policy], "interval_s": 0.2})  # fmt: skip
    platform = Platform(config)
    try:
        service = build_service(platform)
        assert service is not None
        service.start()
        assert list(service.controllers) == ["fraud"]
        _, value, headers = to_kafka(new_event("kawa.monitor.alert", "/m", {"model": "fraud", "kind": "drift"}))
        producer = platform.log.producer()
        producer.send(ALERTS_TOPIC, value, headers=headers)
        producer.close()
        controller = service.controllers["fraud"]  # too few matured outcomes: the trigger is refused, on record
        wait_for(lambda: [type(a).__name__ for a in controller.actions] == ["Skip"], timeout=60)
        assert "matured outcomes" in controller.actions[0].reason  # type: ignore[union-attr]
        service.stop()
    finally:
        platform.stop()


def test_a_monitor_in_kawa_up_raises_the_alert_the_loop_acts_on(tmp_path: Path, monkeypatch: object) -> None:
    """Decisions with a planted shift → the configured monitor's alert → the model's loop reacts (here its
    trigger is refused for too few outcomes, which is on record): monitoring and the loop meet in kawa up."""
    import kawa.monitor.profiles
    from tests.monitor.test_service import MODEL, decisions, reference, write

    profile = reference()
    monkeypatch.setattr(kawa.monitor.profiles, "load_reference_profile",  # type: ignore[attr-defined]
                        lambda registry, model, version: profile)  # fmt: skip
    policy = {"model": MODEL, "training": {"entrypoint": "nowhere:train"}, "triggers": {"alerts": ["drift"]},
              "limits": {"min_outcomes": 10**6}}  # fmt: skip
    monitor = {"model": MODEL, "pane_s": 300.0, "panes": 1, "window_size": 250, "sequential_arl0": 1e6,
               "shift": 1.0, "sequential_mode": "mean"}  # fmt: skip
    config = load_config(home=str(tmp_path / ".kawa"), portal={"enabled": False},
                         loop={"policies": [policy], "monitors": [monitor], "interval_s": 0.2})  # fmt: skip
    platform = Platform(config)
    try:
        write(platform.log, decisions(1500, seed=1) + decisions(1500, seed=2, start=1500, shift=1.0))
        service = build_service(platform)
        assert service is not None
        service.start()
        controller = service.controllers[MODEL]
        wait_for(lambda: any(type(a).__name__ == "Skip" for a in controller.actions), timeout=120)
        assert all(type(a).__name__ == "Skip" for a in controller.actions)
        service.stop()
    finally:
        platform.stop()
