"""Experiments on the log (create, list, stop, read from another process's client), and in the request path:
``ctx.model(ref, experiment=..., unit=...)`` routes units to arms and records arm and propensity."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from kawa.config import KawaConfig
from kawa.errors import KawaError
from kawa.evaluation.assignment import assign
from kawa.evaluation.experiments import ExperimentExists, ExperimentNotFound, ExperimentStore, ExperimentsView
from kawa.evaluation.spec import Arm, ExperimentSpec
from kawa.evaluation.status import experiment_status, read_status
from kawa.events.schemas import Prediction
from kawa.functions import App
from kawa.functions.types import Allocation, allocating
from kawa.log import EventLog, open_log
from kawa.ml.prediction_log import PredictionLogger, read_prediction
from kawa.testing import cloud_event, invoke


def spec(name: str = "triage", salt: str = "s1", *, holdout: bool = False) -> ExperimentSpec:
    second = Arm("silent", 0.5, holdout=True) if holdout else Arm("challenger", 0.5, model="risk@challenger")
    return ExperimentSpec(
        name=name, model="risk", arms=(Arm("champion", 0.5, model="risk@champion"), second), unit="patient",
        salt=salt, primary_metric="sepsis_within_6h", maturity_window_s=6 * 3600, metric_kind="proportion",
        horizon=10_000,
    )  # fmt: skip


@pytest.fixture(params=["embedded", "memory"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    opened = open_log(f"embedded:{tmp_path / 'log'}" if request.param == "embedded" else "memory:",
                      KawaConfig(home=tmp_path / ".kawa"))  # fmt: skip
    yield opened
    opened.close()


def test_create_list_stop_and_reuse_a_name(log: EventLog) -> None:
    store = ExperimentStore(log)
    created = store.create(spec())
    assert created.running and store.get("triage").spec == spec()
    with pytest.raises(ExperimentExists, match="is running"):
        store.create(spec())
    store.create(spec("other", "s9"), shadow=True)
    assert [s.name for s in store.list()] == ["other", "triage"]  # running, newest first
    stopped = store.stop("triage", "challenger was worse")
    assert not stopped.running and stopped.reason == "challenger was worse" and stopped.stopped_ms
    assert store.get("triage").status == "stopped" and store.get("other").shadow
    with pytest.raises(KawaError, match="already stopped"):
        store.stop("triage")
    with pytest.raises(ExperimentExists, match="another salt"):
        store.create(spec())  # same salt: units would keep their arms
    assert store.create(spec(salt="s2")).running
    with pytest.raises(ExperimentNotFound, match="kawa experiments list"):
        store.get("nope")


def test_the_log_is_the_source_of_truth_for_other_clients(tmp_path: Path) -> None:
    """A second client of the same embedded log (another process would open it the same way) sees the
    experiment, and a stop reaches a cached view on its next refresh."""
    config = KawaConfig(home=tmp_path / ".kawa")
    writer = open_log(f"embedded:{tmp_path / 'log'}", config)
    ExperimentStore(writer).create(spec())
    reader = open_log(f"embedded:{tmp_path / 'log'}", config)
    view = ExperimentsView(reader, refresh_s=0.0)
    try:
        assert view.get("triage").running
        ExperimentStore(writer).stop("triage")
        assert not view.get("triage").running
    finally:
        view.close()
        reader.close()
        writer.close()


@pytest.mark.kafka
def test_experiments_on_apache_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = KawaConfig(home=tmp_path / ".kawa")
    topic = f"kawa.experiments-{uuid.uuid4().hex[:8]}"
    one = open_log(f"kafka://{kafka_bootstrap}", config)
    two = open_log(f"kafka://{kafka_bootstrap}", config)
    try:
        ExperimentStore(one, topic).create(spec())
        view = ExperimentsView(two, topic, refresh_s=0.0)
        assert view.get("triage").spec.spec_hash() == spec().spec_hash()
        ExperimentStore(one, topic).stop("triage", "done")
        assert view.get("triage").reason == "done"
        assert one.describe_topic(topic).cleanup_policy == "compact"
        view.close()
    finally:
        one.delete_topic(topic)
        one.close()
        two.close()


# --- the request path -------------------------------------------------------------------------------

app = App("ward")


@app.function(topic="observations", name="score")
def score(event: Any, ctx: Any) -> Any:
    model = ctx.model("risk@champion", experiment="triage", unit=event.get_data()["patient"])
    risk = float(model.predict(np.zeros((1, 3)))[0])
    data = {"risk": risk, "arm": getattr(model, "arm", None), "alert": bool(getattr(model, "acts", True))}
    return ctx.new_event("dev.kawa.risk", data)


MODELS = {"risk@champion": lambda x: [0.25], "risk@challenger": lambda x: [0.75]}


def _observe(patient: str) -> Any:
    return cloud_event("dev.kawa.observation", {"patient": patient})


def test_units_get_their_arm_and_every_prediction_says_so() -> None:
    arms = {}
    for n in range(400):
        patient = f"p{n}"
        out = invoke(score, _observe(patient), models=MODELS, experiments=[spec()])
        assert out.outcome == "ok", out.reason
        expected = assign(patient, "s1", [("champion", 0.5), ("challenger", 0.5)]).arm
        reply = out.replies[0].get_data()
        assert reply["arm"] == expected and reply["risk"] == (0.25 if expected == "champion" else 0.75)
        (prediction,) = out.predictions
        assert prediction.allocation == Allocation("triage", expected, 0.5, patient, True, spec().spec_hash())
        arms[patient] = expected
    again = invoke(score, _observe("p7"), models=MODELS, experiments=[spec()])
    assert again.replies[0].get_data()["arm"] == arms["p7"]  # sticky
    share = sum(a == "challenger" for a in arms.values()) / len(arms)
    assert 0.4 < share < 0.6


def test_shadow_scores_every_arm_and_only_the_assigned_one_acts() -> None:
    out = invoke(score, _observe("p1"), models=MODELS, experiments=[spec()], shadow=True)
    allocations = {p.allocation.arm: p for p in out.predictions if p.allocation is not None}
    assert set(allocations) == {"champion", "challenger"}
    acting = [arm for arm, p in allocations.items() if p.allocation and p.allocation.acting]
    assert acting == [out.replies[0].get_data()["arm"]]


def test_a_holdout_arm_is_scored_but_does_not_act_and_a_stopped_experiment_serves_the_ref() -> None:
    seen = set()
    for n in range(40):
        out = invoke(score, _observe(f"h{n}"), models=MODELS, experiments=[spec(holdout=True)])
        reply = out.replies[0].get_data()
        seen.add((reply["arm"], reply["alert"], reply["risk"]))
    assert seen == {("champion", True, 0.25), ("silent", False, 0.25)}
    from kawa.evaluation.experiments import ExperimentState

    stopped = ExperimentState(spec(), "stopped", 0, reason="done")
    out = invoke(score, _observe("p1"), models=MODELS, experiments=[stopped])
    assert out.replies[0].get_data()["arm"] is None and out.predictions[0].allocation is None


def test_a_missing_unit_or_the_wrong_model_is_a_clear_error() -> None:
    @app.function(topic="observations", name="no-unit")
    def no_unit(event: Any, ctx: Any) -> None:
        ctx.model("risk@champion", experiment="triage").predict([[0.0]])

    out = invoke(no_unit, _observe("p1"), models=MODELS, experiments=[spec()])
    assert out.outcome == "failed" and "needs unit=" in str(out.error)

    @app.function(topic="observations", name="wrong-model")
    def wrong_model(event: Any, ctx: Any) -> None:
        ctx.model("other@champion", experiment="triage", unit="p1").predict([[0.0]])

    out = invoke(wrong_model, _observe("p1"), models={"other@champion": lambda x: [0.0]}, experiments=[spec()])
    assert out.outcome == "failed" and "is on model 'risk'" in str(out.error)


# --- allocation records on the log, and the status ------------------------------------------------------


def _record(logger: PredictionLogger, allocation: Allocation | None) -> None:
    x = np.zeros((1, 3))
    if allocation is None:
        logger.record("risk", 1, x, np.array([0.5]), 0.001)
        return
    with allocating(allocation):
        logger.record("risk", 1 if allocation.arm == "champion" else 2, x, np.array([0.5]), 0.001)


def test_decision_records_reach_the_log_and_feed_the_status(log: EventLog) -> None:
    state = ExperimentStore(log).create(spec())
    logger = PredictionLogger(log, "predictions")
    h = spec().spec_hash()
    for n in range(60):
        patient = f"p{n}"
        arm = assign(patient, "s1", [("champion", 0.5), ("challenger", 0.5)]).arm
        _record(logger, Allocation("triage", arm, 0.5, patient, True, h))
        _record(logger, Allocation("triage", arm, 0.5, patient, True, h))  # a second prediction, same unit
    _record(logger, None)  # outside the experiment
    _record(logger, Allocation("triage", "champion", 0.5, "old", True, "an-older-spec"))
    logger.close()
    status = read_status(log, state, "predictions")
    by_arm = {a.arm: a for a in status.arms}
    assert by_arm["champion"].units + by_arm["challenger"].units == 60
    assert by_arm["champion"].predictions == 2 * by_arm["champion"].units
    assert by_arm["champion"].versions == (1,) and by_arm["challenger"].versions == (2,)
    assert status.foreign == 1 and not status.sample_ratio_mismatch
    from kawa.evaluation.experiments import read_to_end

    first = read_prediction(next(iter(read_to_end(log, "predictions"))))
    assert first.experiment == "triage" and first.propensity == 0.5 and first.spec_hash == h


def test_a_broken_split_is_flagged() -> None:
    state = ExperimentStore(open_log("memory:", KawaConfig())).create(spec())
    h = spec().spec_hash()
    rows = [Prediction(model="risk", version=1, input_shape=[1], latency_ms=1.0, time_ms=0, experiment="triage",
                       arm="champion" if n % 10 else "challenger", propensity=0.5, unit=f"u{n}", acting=True,
                       spec_hash=h) for n in range(2000)]  # fmt: skip
    status = experiment_status(state, rows)
    assert status.sample_ratio_mismatch and status.srm_p_value is not None and status.srm_p_value < 1e-6
    fair = [r.model_copy(update={"arm": assign(r.unit or "", "s1", [("champion", .5), ("challenger", .5)]).arm})
            for r in rows]  # fmt: skip
    assert not experiment_status(state, fair).sample_ratio_mismatch


def test_the_cli_creates_lists_shows_and_stops(tmp_path: Path) -> None:
    from kawa.cli import _register
    from kawa.cli.app import app as cli

    _register()
    log_uri = f"embedded:{tmp_path / 'log'}"
    spec_file = tmp_path / "triage.yaml"
    spec_file.write_text(json.dumps(spec().to_dict()))
    runner = CliRunner()
    result = runner.invoke(cli, ["--log", log_uri, "experiments", "create", str(spec_file)])
    assert result.exit_code == 0, result.output
    assert "triage" in result.output and spec().spec_hash()[:12] in result.output
    result = runner.invoke(cli, ["--log", log_uri, "experiments", "list", "--json"])
    assert [e["status"] for e in json.loads(result.output)] == ["running"]
    log = open_log(log_uri, KawaConfig(home=tmp_path / ".kawa"))
    logger = PredictionLogger(log, "predictions")
    _record(logger, Allocation("triage", "champion", 0.5, "p1", True, spec().spec_hash()))
    logger.close()
    log.close()
    result = runner.invoke(cli, ["--log", log_uri, "experiments", "status", "triage", "--json"])
    assert result.exit_code == 0, result.output
    assert {a["arm"]: a["units"] for a in json.loads(result.output)["arms"]} == {"champion": 1, "challenger": 0}
    result = runner.invoke(cli, ["--log", log_uri, "experiments", "status", "triage"])
    assert "champion" in result.output and "sample ratio" in result.output
    result = runner.invoke(cli, ["--log", log_uri, "experiments", "stop", "triage", "--reason", "enough"])
    assert result.exit_code == 0 and "stopped: enough" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    result = runner.invoke(cli, ["--log", log_uri, "experiments", "create", str(bad)])
    assert result.exit_code != 0 and isinstance(result.exception, KawaError)


@app.function(topic="observations", name="any-arm")
def any_arm(event: Any, ctx: Any) -> Any:
    model = ctx.model("risk@champion", unit=event.get_data()["patient"])  # whichever experiment runs on risk
    return ctx.new_event("dev.kawa.risk", {"risk": float(model.predict(np.zeros((1, 3)))[0]),
                                           "arm": getattr(model, "arm", None)})  # fmt: skip


def test_a_unit_alone_joins_whichever_experiment_runs_on_the_model() -> None:
    out = invoke(any_arm, _observe("p3"), models=MODELS, experiments=[spec()])
    expected = assign("p3", "s1", [("champion", 0.5), ("challenger", 0.5)]).arm
    assert out.replies[0].get_data()["arm"] == expected and out.predictions[0].allocation is not None
    other = ExperimentSpec.from_dict({**spec().to_dict(), "model": "other", "control": "a", "arms": [
        {"name": "a", "weight": 0.5, "model": "other@a"}, {"name": "b", "weight": 0.5, "model": "other@b"}]})
    for experiments in ([], [other]):  # none, or only one on another model: the ref itself, no allocation
        out = invoke(any_arm, _observe("p3"), models=MODELS, experiments=experiments)
        assert out.replies[0].get_data() == {"risk": 0.25, "arm": None} and out.predictions[0].allocation is None


def test_the_view_finds_the_newest_running_experiment_of_a_model(log: EventLog) -> None:
    store = ExperimentStore(log)
    store.create(spec("first", "s1"))
    store.create(spec("second", "s2"))
    view = ExperimentsView(log, refresh_s=0.0)
    try:
        assert view.running_for("risk").name == "second"  # type: ignore[union-attr]
        store.stop("second")
        assert view.running_for("risk").name == "first"  # type: ignore[union-attr]
        assert view.running_for("nothing") is None
    finally:
        view.close()


def test_the_newest_is_the_one_created_last_even_within_one_millisecond(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kawa.evaluation.experiments as experiments

    monkeypatch.setattr(experiments, "_now_ms", lambda: 1_700_000_000_000)  # a frozen clock: both in one ms
    store = ExperimentStore(log)
    first, second = store.create(spec("first", "s1")), store.create(spec("second", "s2"))
    assert second.created_ms > first.created_ms
    view = ExperimentsView(log, refresh_s=0.0)
    try:
        assert view.running_for("risk").name == "second"  # type: ignore[union-attr]
    finally:
        view.close()
