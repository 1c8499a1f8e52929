"""The error-rate guardrail: a handler that fails while an experiment arm serves its event leaves a failure
record (``kawa.monitor.failure``) on the decisions topic, and the evaluator counts it against that arm. Without
the records, a challenger that crashes on some inputs would look better, since its failures leave the sample."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.evaluation.assignment import Assigner
from kawa.evaluation.cohorts import Cohorts
from kawa.evaluation.experiments import ExperimentStore
from kawa.evaluation.service import LOOK_EVENT, Evaluator
from kawa.evaluation.spec import Arm, ExperimentSpec, Guardrail
from kawa.events.ref import EventRef
from kawa.functions import App
from kawa.functions.app import spec_of
from kawa.functions.context import Runtime
from kawa.functions.invoke import invoke_with_retries
from kawa.log import EventLog, open_log
from kawa.log.base import TopicSpec
from kawa.monitor.failures import FailureRecord, decode_failure
from kawa.monitor.records import DECISIONS_TOPIC, DecisionRecord
from kawa.testing import cloud_event, invoke
from tests.evaluation.test_service import _events

SPEC = ExperimentSpec(
    name="errors", model="risk", unit="card", salt="errors-salt", primary_metric="caught", metric_kind="proportion",
    maturity_window_s=10.0, horizon=3000,
    arms=(Arm("champion", 0.5, model="risk@champion"), Arm("challenger", 0.5, model="risk@challenger")),
    guardrails=(Guardrail("error_rate", 0.05),),
)  # fmt: skip

app = App("payments")


@app.function(topic="transactions", name="score", retries=1, backoff_s=0.0, max_backoff_s=0.0)
def score(event: Any, ctx: Any) -> None:
    card = event.get_data()["card"]
    if card == "before":
        raise ValueError("failed before any arm was given")
    model = ctx.model("risk@champion", experiment="errors", unit=card)
    risk = float(model.predict([[float(event.get_data().get("amount", 1.0))]])[0])
    ctx.decide(card, model=model, score=risk, action="investigate" if risk > 0.5 else "pass")


def _unit_of(arm: str, start: int = 0) -> str:
    assigner = Assigner.for_spec(SPEC)
    return next(f"card-{i}" for i in range(start, 10_000) if assigner.assign(f"card-{i}").arm == arm)


def _broken(x: Any) -> Any:
    raise RuntimeError("the challenger cannot score this")


def _failures(out: Any) -> list[FailureRecord]:
    return [f for e in out.emitted_to(DECISIONS_TOPIC) if (f := decode_failure(e)) is not None]


def test_a_failed_handler_leaves_a_failure_record_for_the_arm_that_served_it() -> None:
    models = {"risk@champion": lambda x: [0.2], "risk@challenger": _broken}
    card = _unit_of("challenger")
    out = invoke(score, cloud_event("dev.kawa.tx", {"card": card}, id="tx-1", source="/payments"), models=models,
                 experiments=[SPEC])  # fmt: skip
    assert out.outcome == "failed"
    (failure,) = _failures(out)
    assert (failure.ref, failure.entity, failure.experiment, failure.arm) == (EventRef("/payments", "tx-1"), card,
                                                                            "errors", "challenger")  # fmt: skip
    assert (failure.model, failure.version, failure.propensity, failure.spec_hash) == ("risk", 1, 0.5,
                                                                                       SPEC.spec_hash())  # fmt: skip
    assert failure.attempt == 1 and failure.reason == "handler-error"  # a code, never the error's text
    assert "cannot score" not in str(out.emitted_to(DECISIONS_TOPIC)[0].get_data())

    ok = invoke(score, cloud_event("dev.kawa.tx", {"card": _unit_of("champion")}, id="tx-2", source="/payments"),
                models=models, experiments=[SPEC])  # fmt: skip
    assert ok.outcome == "ok" and _failures(ok) == [] and len(ok.emitted_to(DECISIONS_TOPIC)) == 1
    early = invoke(score, cloud_event("dev.kawa.tx", {"card": "before"}, id="tx-3", source="/payments"),
                   models=models, experiments=[SPEC])  # fmt: skip
    assert early.outcome == "failed" and early.emitted_to(DECISIONS_TOPIC) == []  # no arm was given: no one's error


def _failure(i: int, arm: str, attempt: int = 1) -> FailureRecord:
    return FailureRecord(EventRef("/p", f"e{i}"), "risk", 2, f"card-{i}", 1000.0 + i, attempt, "handler-error",
                         SPEC.name, arm, 0.5, SPEC.spec_hash())  # fmt: skip


def _decision(i: int, arm: str) -> DecisionRecord:
    return DecisionRecord(EventRef("/p", f"e{i}"), "risk", 2, f"card-{i}", 1000.0 + i, score=0.5, arm=arm,
                          propensity=0.5, experiment=SPEC.name, spec_hash=SPEC.spec_hash(), acting=True)  # fmt: skip


def test_the_error_rate_counts_events_that_failed_and_were_never_decided() -> None:
    cohorts = Cohorts(SPEC)
    assert cohorts.guardrail("error_rate", "challenger") is None and cohorts.unmeasured() == ("error_rate",)
    for i in range(8):
        cohorts.add_decision(_decision(i, "challenger"))
    for attempt in (1, 2):  # two failed attempts of one event count once
        cohorts.add_failure(_failure(100, "challenger", attempt))
    cohorts.add_failure(_failure(101, "challenger"))
    cohorts.add_decision(_decision(101, "challenger"))  # its retry decided: not an error
    cohorts.add_failure(_failure(102, "challenger"))
    cohorts.add_failure(FailureRecord(EventRef("/p", "x"), "risk", 2, "c", 1.0, 1, "handler-error", "other",
                                      "challenger", 0.5, "h"))  # another experiment's  # fmt: skip
    assert cohorts.guardrail("error_rate", "challenger") == pytest.approx(2 / (9 + 2))
    cohorts.add_decision(_decision(200, "champion"))
    assert cohorts.guardrail("error_rate", "champion") == 0.0 and cohorts.unmeasured() == ()


class _Models:
    """Fake model versions by reference (champion version 1, challenger version 2)."""

    def __init__(self, fakes: dict[str, Callable[[Any], Any]]) -> None:
        self.fakes = fakes

    def predictor(self, ref: str) -> Any:
        fake, version = self.fakes[ref], 1 if ref.endswith("champion") else 2

        class Fake:
            name, tags = "risk", {}

            def __init__(self) -> None:
                self.version, self.ref = version, f"risk/{version}"

            def predict(self, x: Any) -> Any:
                return np.asarray(fake(x))

        return Fake()

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def log(tmp_path: Path) -> Any:
    opened = open_log(f"embedded:{tmp_path / 'log'}", KawaConfig(home=tmp_path / ".kawa"))
    yield opened
    opened.close()


def test_a_challenger_that_fails_on_some_inputs_breaches_the_error_rate_guardrail(log: EventLog) -> None:
    """Real runtime, real log: the handler runs with retries (a transient failure that a retry fixes is no
    error), its records go to the log, and the evaluator stops the experiment on the challenger's error rate."""
    ExperimentStore(log).create(SPEC)
    log.create_topic(TopicSpec(DECISIONS_TOPIC), exist_ok=True)
    flaky_seen: set[str] = set()

    def challenger(x: Any) -> Any:
        amount = float(np.asarray(x)[0][0])
        if amount >= 90:  # fails on about one input in ten, on every attempt
            raise RuntimeError("the challenger cannot score this")
        return [0.6]

    def champion(x: Any) -> Any:
        amount = float(np.asarray(x)[0][0])
        if amount == 42 and "42" not in flaky_seen:  # a transient failure: the retry decides
            flaky_seen.add("42")
            raise TimeoutError("a transient failure")
        return [0.2]

    runtime = Runtime(spec_of(score), log=log, models=_Models({"risk@champion": champion,
                                                               "risk@challenger": challenger}))  # fmt: skip
    rng = np.random.default_rng(4)
    outcomes: dict[str, int] = {}
    for i in range(400):
        amount = 42 if i == 7 else int(rng.integers(0, 100))
        event = cloud_event("dev.kawa.tx", {"card": f"card-{i}", "amount": amount}, id=f"tx-{i}", source="/payments")
        outcome = invoke_with_retries(runtime, event, threading.Event())
        outcomes[outcome.status] = outcomes.get(outcome.status, 0) + 1
    runtime.flush(10.0)
    assert outcomes["dead"] > 5 and flaky_seen == {"42"}

    evaluator = Evaluator(log, SPEC.name).start()
    try:
        evaluator.step(5000.0)
        decision = evaluator.decision
        assert decision is not None and decision.kind == "guardrail-breach" and decision.arm == "challenger"
        assert "error_rate" in decision.reason
        rates = evaluator.state.looks[-1].guardrails["error_rate"]
        assert rates["champion"] == 0.0  # the transient failure was taken back by its retry
        challenger_units = sum(Assigner.for_spec(SPEC).assign(f"card-{i}").arm == "challenger" for i in range(400))
        assert rates["challenger"] == pytest.approx(outcomes["dead"] / challenger_units)
        (look,) = _events(log, LOOK_EVENT)
        assert look["unmeasured_guardrails"] == []
        assert ExperimentStore(log).get(SPEC.name).reason.startswith("guardrail-breach")
    finally:
        evaluator.close()
        runtime.close()


def test_the_knative_adapter_answers_500_with_the_failure_record_already_on_the_log(log: EventLog) -> None:
    import json
    import urllib.error
    import urllib.request

    from kawa.evaluation.experiments import read_to_end
    from kawa.functions.http import BackgroundServer, create_app

    ExperimentStore(log).create(SPEC)
    log.create_topic(TopicSpec(DECISIONS_TOPIC), exist_ok=True)
    runtime = Runtime(spec_of(score), log=log, models=_Models({"risk@champion": lambda x: [0.2],
                                                               "risk@challenger": _broken}),
                      producer=log.producer(linger_ms=600_000))  # sent on a flush only, as a loaded Kafka  # fmt: skip
    card = _unit_of("challenger")
    headers = {"ce-specversion": "1.0", "ce-id": "h-1", "ce-source": "/payments", "ce-type": "dev.kawa.tx",
               "content-type": "application/json"}  # fmt: skip
    with BackgroundServer(create_app(runtime)) as server:
        request = urllib.request.Request(server.url, data=json.dumps({"card": card}).encode(), headers=headers)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 500
    failures = [f for r in read_to_end(log, DECISIONS_TOPIC) if (f := decode_failure(r)) is not None]
    assert [(f.ref, f.arm, f.attempt) for f in failures] == [(EventRef("/payments", "h-1"), "challenger", 1)]
    runtime.close()
