"""``kawa monitor`` and ``kawa outcomes`` end to end on an embedded log, with the reference profile logged to and
read back from a real MLflow (sqlite) run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kawa.config import KawaConfig, load_config
from kawa.errors import KawaError
from kawa.events.ref import EventRef
from kawa.log import open_log
from kawa.monitor.records import OutcomeEvent, decode
from tests.monitor.test_service import decisions, reference, write


@pytest.fixture
def cli() -> object:
    from kawa.cli import _register
    from kawa.cli.app import app

    _register()
    return app


def records(log_uri: str, topic: str, home: Path) -> list[object]:
    log = open_log(log_uri, KawaConfig(home=home))
    consumer = log.consumer(f"t-{uuid.uuid4().hex[:6]}", [topic])
    out: list[object] = []
    while len(out) < sum(p.end_offset for p in log.describe_topic(topic).partitions):
        out += [decode(r) for r in consumer.poll(0.2)]
    consumer.close()
    log.close()
    return out


def test_outcomes_send_writes_an_outcome_that_decode_reads_back(cli: object, tmp_path: Path) -> None:
    log_uri = f"embedded:{tmp_path / 'log'}"
    runner = CliRunner()
    sent = runner.invoke(cli, ["--log", log_uri, "outcomes", "send", "--ref", "kawa://xray/fn/e-17", "--label", "1",
                               "--observed-at", "2026-12-02T06:00:00Z"])  # fmt: skip
    assert sent.exit_code == 0, sent.output
    assert "outcome for event kawa://xray/fn/e-17: label 1, written to outcomes" in sent.output
    sent = runner.invoke(cli, ["--log", log_uri, "outcomes", "send", "--entity", "card-9", "--at", "1800000000",
                               "--value", "42.5", "--observed-at", "1800000100", "--id", "cb-1"])  # fmt: skip
    assert sent.exit_code == 0, sent.output
    first, second = records(log_uri, "outcomes", tmp_path / ".kawa")
    assert first == OutcomeEvent(1_796_191_200.0, ref=EventRef("kawa://xray/fn", "e-17"), label=1)
    assert second == OutcomeEvent(1_800_000_100.0, entity="card-9", at=1_800_000_000.0, value=42.5, id="cb-1")
    both = runner.invoke(cli, ["--log", log_uri, "outcomes", "send", "--ref", "s/1", "--entity", "x", "--label", "0"])
    assert both.exit_code != 0 and "one of them" in str(both.exception)
    bad = runner.invoke(cli, ["--log", log_uri, "outcomes", "send", "--entity", "x", "--label", "2"])
    assert bad.exit_code != 0 and isinstance(bad.exception, KawaError) and "0 or 1" in str(bad.exception)


def test_profile_run_and_status_end_to_end(cli: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kawa.ml import tracking
    from kawa.ml.registry import Registry
    from kawa.monitor.profiles import NoReferenceProfile, load_reference_profile, log_reference_profile

    monkeypatch.setenv("KAWA_ML__TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("KAWA_ML__ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_CONFIG_DIR", str(tmp_path / "home" / "mlflow"))
    config = load_config()
    ref = reference()
    registry = Registry(config, publish=False)
    # Training logs the profile next to the version; a version trained without one says what to do.
    with tracking.run("monitor-test", config=config) as run:
        assert log_reference_profile(run, ref) == "kawa/reference_profile.json"
        assert run.run_id is not None
        version = registry.register(f"runs:/{run.run_id}/kawa", "risk", run_id=run.run_id)
    with tracking.run("monitor-test", config=config) as bare:
        without = registry.register(f"runs:/{bare.run_id}/x", "risk", run_id=bare.run_id)
    loaded = load_reference_profile(registry, "risk", version)
    assert loaded == ref and loaded.to_json() == ref.to_json()
    with pytest.raises(NoReferenceProfile, match=r"train it with a reference profile \(see docs/monitoring.md\)"):
        load_reference_profile(registry, "risk", without)
    registry.close()

    log_uri = f"embedded:{tmp_path / 'log'}"
    runner = CliRunner()
    shown = runner.invoke(cli, ["--log", log_uri, "monitor", "profile", f"risk@{version}", "--json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.output)
    assert summary["n"] == 4000 and [f["name"] for f in summary["features"]] == ["a", "b", "c", "ward", "<score>"]
    assert summary["features"][3]["kind"] == "categorical" and summary["features"][0]["bins"] == 10
    table = runner.invoke(cli, ["--log", log_uri, "monitor", "profile", f"risk@{version}"])
    assert table.exit_code == 0 and "reference profile of 4000 records" in table.output
    missing = runner.invoke(cli, ["--log", log_uri, "monitor", "profile", f"risk@{without}"])
    assert missing.exit_code != 0 and isinstance(missing.exception, NoReferenceProfile)

    log = open_log(log_uri, KawaConfig(home=tmp_path / ".kawa"))
    write(log, decisions(900, seed=1, version=version) + decisions(900, seed=2, start=900, shift=1.0, version=version))
    log.close()
    empty = runner.invoke(cli, ["--log", log_uri, "monitor", "status", "risk"])
    assert empty.exit_code == 0 and "no monitoring events for risk" in empty.output
    args = ["--log", log_uri, "monitor", "run", "risk", "--once", "--pane", "300", "--panes", "1", "--window-size",
            "250", "--sequential-arl0", "0"]  # fmt: skip
    ran = runner.invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    assert f"alert: risk version {version} (window) a" in ran.output
    assert "1800 decision(s) of risk read, 6 event(s) written" in ran.output  # 5 window tables and 1 alert
    again = runner.invoke(cli, args)  # a second run replays and writes nothing twice
    assert again.exit_code == 0 and "0 event(s) written" in again.output
    st = runner.invoke(cli, ["--log", log_uri, "monitor", "status", "risk", "--json"])
    assert st.exit_code == 0, st.output
    (v,) = json.loads(st.output)["versions"]
    assert v["version"] == version and v["alerts"] == 1 and len(v["open_alerts"]) == 1
    assert v["open_alerts"][0]["features"] == ["a"] and v["last_window"]["drift"]["a"]["psi"] > 0.1
    text = runner.invoke(cli, ["--log", log_uri, "monitor", "status", "risk"])
    assert text.exit_code == 0 and "1 open alert(s)" in text.output and "last window" in text.output
