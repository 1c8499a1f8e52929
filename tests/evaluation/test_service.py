"""The evaluator on a real log: decisions and delayed outcomes in, always-valid looks and a decision out, the
experiment stopped with the decision's reason, a decision record anyone can recompute, and a restart that
rebuilds the same looks. Outcomes are simulated with a known effect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.evaluation.assignment import Assigner
from kawa.evaluation.decision import DecisionRecord as EvalRecord
from kawa.evaluation.decision import recompute
from kawa.evaluation.experiments import ExperimentStore, read_to_end
from kawa.evaluation.service import DECISION_EVENT, EVALUATIONS_TOPIC, LOOK_EVENT, Evaluator
from kawa.evaluation.spec import Arm, ExperimentSpec
from kawa.events import from_record
from kawa.events.ref import EventRef
from kawa.functions import App
from kawa.log import EventLog, open_log
from kawa.monitor.outcomes import publish
from kawa.monitor.records import DECISIONS_TOPIC, OUTCOMES_TOPIC, DecisionRecord, OutcomeEvent, decode
from kawa.testing import cloud_event, invoke

MATURITY = 10.0


def spec(name: str = "canary") -> ExperimentSpec:
    return ExperimentSpec(
        name=name, model="risk", unit="card", salt=f"{name}-salt", primary_metric="caught", metric_kind="proportion",
        maturity_window_s=MATURITY, horizon=3000, alpha=0.05,
        arms=(Arm("champion", 0.5, model="risk@champion"), Arm("challenger", 0.5, model="risk@challenger")),
    )  # fmt: skip


def simulate(log: EventLog, s: ExperimentSpec, units: int, p: dict[str, float], seed: int,
             alert_rate: dict[str, float] | None = None) -> list[float]:  # fmt: skip
    """``units`` decisions 0.1 s apart, each unit's arm by the spec's assignment; a positive outcome (label 1)
    arrives 5 s later with probability ``p[arm]``, a negative never (it matures as one). Returns the times."""
    from kawa.log.base import TopicSpec

    for topic in (DECISIONS_TOPIC, OUTCOMES_TOPIC):
        log.create_topic(TopicSpec(topic), exist_ok=True)
    rng = np.random.default_rng(seed)
    assigner = Assigner.for_spec(s)
    producer = log.producer()
    times = []
    try:
        for i in range(units):
            unit, t = f"card-{i}", 1_000.0 + 0.1 * i
            chosen = assigner.assign(unit)
            ref = EventRef("/payments", f"tx-{i}")
            version = 1 if chosen.arm == "champion" else 2
            action = None
            if alert_rate is not None:
                action = "alert" if rng.random() < alert_rate[chosen.arm] else "none"
            decision = DecisionRecord(ref, "risk", version, unit, t, score=0.5, action=action, arm=chosen.arm,
                                      propensity=chosen.propensity, experiment=s.name, spec_hash=s.spec_hash(),
                                      acting=True)  # fmt: skip
            publish(producer, DECISIONS_TOPIC, decision.to_event("/tests"))
            if rng.random() < p[chosen.arm]:
                publish(producer, OUTCOMES_TOPIC, OutcomeEvent(t + 5.0, ref=ref, label=1).to_event("/tests"))
            times.append(t)
    finally:
        producer.close()
    return times


@pytest.fixture
def log(tmp_path: Path) -> Any:
    opened = open_log(f"embedded:{tmp_path / 'log'}", KawaConfig(home=tmp_path / ".kawa"))
    yield opened
    opened.close()


def _events(log: EventLog, kind: str) -> list[dict[str, Any]]:
    out = []
    for record in read_to_end(log, EVALUATIONS_TOPIC):
        event = from_record(record)
        if event.get_type() == kind:
            data = event.get_data()
            out.append(json.loads(data) if isinstance(data, bytes | str) else data)
    return out


def test_a_better_challenger_wins_the_experiment_stops_and_the_record_recomputes(log: EventLog) -> None:
    s = spec()
    ExperimentStore(log).create(s)
    times = simulate(log, s, 2400, {"champion": 0.30, "challenger": 0.45}, seed=11)
    evaluator = Evaluator(log, s.name).start()
    try:
        for watermark in np.arange(times[0] + 20, times[-1] + MATURITY + 1, 20.0):
            evaluator.step(float(watermark))
            if evaluator.decision is not None:
                break
        decision = evaluator.decision
        assert decision is not None and decision.kind == "stop-efficacy" and decision.arm == "challenger"
        last = evaluator.state.looks[-1].comparisons[0]
        assert last.lower > 0 and last.lower <= 0.15 <= last.upper  # the true difference is inside
        stopped = ExperimentStore(log).get(s.name)
        assert not stopped.running and stopped.reason.startswith("stop-efficacy: arm 'challenger' beats")
        looks, decisions = _events(log, LOOK_EVENT), _events(log, DECISION_EVENT)
        assert len(looks) == len(evaluator.state.looks) and len(decisions) == 1
        rec = EvalRecord.from_json(json.dumps(decisions[0]["record"]))
        assert rec.spec_hash == s.spec_hash() and rec.versions == {"champion": "1", "challenger": "2"}
        assert recompute(rec, evaluator.looks_data) == decision  # anyone can recompute it from the looks' data
        assert evaluator.step() is None  # decided: no more looks
    finally:
        evaluator.close()


def test_no_difference_no_winner(log: EventLog) -> None:
    s = spec("aa")
    ExperimentStore(log).create(s)
    times = simulate(log, s, 1500, {"champion": 0.3, "challenger": 0.3}, seed=5)
    evaluator = Evaluator(log, s.name).start()
    try:
        for watermark in [*np.arange(times[0] + 20, times[-1], 15.0), times[-1] + MATURITY + 1]:
            evaluator.step(float(watermark))
        assert evaluator.decision is None or evaluator.decision.kind != "stop-efficacy"
        assert ExperimentStore(log).get(s.name).running
        n = evaluator.state.looks[-1].n
        assert sum(n.values()) == 1500  # every unit matured, a missing outcome as a negative
        from kawa.evaluation.status import read_status

        status = read_status(log, ExperimentStore(log).get(s.name), "predictions")  # decision records count too
        assert {a.arm: a.units for a in status.arms} == n and sum(a.decisions for a in status.arms) == 1500
    finally:
        evaluator.close()


def test_a_restarted_evaluator_rebuilds_the_same_looks(tmp_path: Path) -> None:
    config = KawaConfig(home=tmp_path / ".kawa")
    logs = [open_log(f"embedded:{tmp_path / name}", config) for name in ("a", "b")]
    s = spec("restart")
    watermarks = [1_010.0 + 12.0 * k for k in range(8)]
    for log in logs:
        ExperimentStore(log).create(s)
        simulate(log, s, 900, {"champion": 0.3, "challenger": 0.36}, seed=3)
    try:
        steady = Evaluator(logs[0], s.name, auto_stop=False).start()
        for w in watermarks:
            steady.step(w)
        first = Evaluator(logs[1], s.name, auto_stop=False).start()
        for w in watermarks[:3]:
            first.step(w)
        first.close()  # a crash after three looks
        second = Evaluator(logs[1], s.name, auto_stop=False).start()
        assert second.state.looks == first.state.looks  # rebuilt from the log, not from memory
        for w in watermarks[3:]:
            second.step(w)
        assert second.state.looks == steady.state.looks
        assert second.cohorts.look_data() == steady.cohorts.look_data()
        steady.close()
        second.close()
    finally:
        for log in logs:
            log.close()


app = App("payments")


@app.function(topic="transactions", name="score")
def score(event: Any, ctx: Any) -> None:
    card = event.get_data()["card"]
    model = ctx.model("risk@champion", experiment="canary", unit=card)
    risk = float(model.predict([[1.0, 2.0]])[0])
    ctx.decide(card, model=model, score=risk, action="investigate" if risk > 0.5 else "pass",
               features={"amount": 12.5})


def test_ctx_decide_records_the_arm_the_unit_got() -> None:
    out = invoke(score, cloud_event("dev.kawa.tx", {"card": "c-9"}, id="tx-9", source="/payments"),
                 models={"risk@champion": lambda x: [0.2], "risk@challenger": lambda x: [0.8]},
                 experiments=[spec()])  # fmt: skip
    assert out.outcome == "ok", out.reason
    (event,) = out.emitted_to(DECISIONS_TOPIC)
    record = decode(event)
    assert isinstance(record, DecisionRecord)
    arm = Assigner.for_spec(spec()).assign("c-9").arm
    assert record.ref == EventRef("/payments", "tx-9") and record.entity == "c-9"
    assert (record.experiment, record.arm, record.propensity, record.spec_hash) == ("canary", arm, 0.5,
                                                                                   spec().spec_hash())
    assert record.version == 1 and record.score == (0.2 if arm == "champion" else 0.8)
    assert record.action == ("pass" if arm == "champion" else "investigate") and record.features == {"amount": 12.5}
    assert record.latency_ms is not None and 0 <= record.latency_ms < 10_000  # the handler's time to its decision


def test_the_cli_takes_a_look_and_reports_the_decision(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kawa.cli import _register
    from kawa.cli.app import app as cli

    _register()
    uri = f"embedded:{tmp_path / 'log'}"
    log = open_log(uri, KawaConfig(home=tmp_path / ".kawa"))
    s = spec("cli")
    ExperimentStore(log).create(s)
    simulate(log, s, 2400, {"champion": 0.2, "challenger": 0.5}, seed=2)
    log.close()
    result = CliRunner().invoke(cli, ["--log", uri, "experiments", "evaluate", "cli"])
    assert result.exit_code == 0, result.output
    assert "look 0: matured units champion" in result.output and "challenger - champion: +0.29" in result.output
    assert "decided at look 0: stop-efficacy (challenger)" in result.output
    result = CliRunner().invoke(cli, ["--log", uri, "experiments", "list", "--json"])
    assert json.loads(result.output)[0]["status"] == "stopped"


def test_a_guardrail_measured_from_the_decisions_stops_a_challenger_that_alerts_too_often(log: EventLog) -> None:
    from dataclasses import replace

    from kawa.evaluation.spec import Guardrail

    s = replace(spec("burden"), guardrails=(Guardrail("action_rate:alert", 0.3), Guardrail("latency_p99_ms", 50),
                                            Guardrail("error_rate", 0.01)))  # fmt: skip
    ExperimentStore(log).create(s)
    times = simulate(log, s, 800, {"champion": 0.3, "challenger": 0.3}, seed=6,
                     alert_rate={"champion": 0.15, "challenger": 0.6})  # fmt: skip
    evaluator = Evaluator(log, s.name).start()
    try:
        evaluator.step(times[-1] + MATURITY + 1)
        decision = evaluator.decision
        assert decision is not None and decision.kind == "guardrail-breach" and decision.arm == "challenger"
        values = evaluator.state.looks[-1].guardrails["action_rate:alert"]
        assert values["challenger"] == pytest.approx(0.6, abs=0.06) and values["champion"] < 0.3
        (look,) = _events(log, LOOK_EVENT)
        assert look["unmeasured_guardrails"] == ["latency_p99_ms"]  # no data: said, not passed
        assert look["data"]["guardrails"]["error_rate"] == {"champion": 0.0, "challenger": 0.0}  # no failure records
        assert ExperimentStore(log).get(s.name).reason.startswith("guardrail-breach")
    finally:
        evaluator.close()


def test_a_slower_challenger_breaches_the_latency_guardrail(log: EventLog) -> None:
    """Decision records carry the handler's latency (ctx.decide measures it); p99 per arm is the guardrail."""
    from dataclasses import replace

    from kawa.evaluation.spec import Guardrail
    from kawa.log.base import TopicSpec

    s = replace(spec("slow"), guardrails=(Guardrail("latency_p99_ms", 50.0),))
    ExperimentStore(log).create(s)
    for topic in (DECISIONS_TOPIC, OUTCOMES_TOPIC):
        log.create_topic(TopicSpec(topic), exist_ok=True)
    rng = np.random.default_rng(2)
    assigner = Assigner.for_spec(s)
    producer = log.producer()
    for i in range(400):
        chosen = assigner.assign(f"c{i}")
        latency = float(rng.gamma(4, 10 if chosen.arm == "challenger" else 2))  # p99 about 90 ms against 18
        decision = DecisionRecord(EventRef("/p", f"slow-{i}"), "risk", 1, f"c{i}", 1000.0 + i, score=0.5,
                                  arm=chosen.arm, propensity=0.5, experiment=s.name, spec_hash=s.spec_hash(),
                                  acting=True, latency_ms=latency)  # fmt: skip
        publish(producer, DECISIONS_TOPIC, decision.to_event("/tests"))
    producer.close()
    evaluator = Evaluator(log, s.name).start()
    try:
        evaluator.step(2000.0)
        decision = evaluator.decision
        assert decision is not None and decision.kind == "guardrail-breach" and "latency_p99_ms" in decision.reason
        p99 = evaluator.state.looks[-1].guardrails["latency_p99_ms"]
        assert p99["challenger"] > 50 > p99["champion"]
        assert ExperimentStore(log).get(s.name).reason.startswith("guardrail-breach")
    finally:
        evaluator.close()
