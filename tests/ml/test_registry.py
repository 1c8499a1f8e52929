"""The registry on MLflow (sqlite): versions with metrics and lineage, promote, rollback, alias events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kawa.config import KawaConfig
from kawa.errors import ModelAliasNotFound, ModelError, ModelNotFound
from kawa.events import from_record
from kawa.ml import tracking
from kawa.ml.registry import ALIAS_EVENT, Registry
from tests.ml.helpers import register_versions


def _alias_events(log: Any, topic: str = "kawa.models") -> list[dict[str, Any]]:
    consumer = log.consumer("test-reader", [topic], auto_offset_reset="earliest")
    try:
        events = [from_record(r) for r in consumer.poll(timeout=1.0, max_records=100)]
    finally:
        consumer.close()
    assert all(e.get_type() == ALIAS_EVENT for e in events)
    return [e.get_data() for e in events]  # type: ignore[misc]


def test_promote_rollback_history_and_events(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    v1, v2, v3 = register_versions(model_name, 3)
    reg = Registry(config, memory_log)
    assert reg.promote(model_name, v1).previous is None
    assert reg.promote(model_name, v2).previous == v1
    reg.promote(model_name, v3)
    reg.promote(model_name, v1, alias="challenger")
    assert reg.resolve(f"{model_name}@champion") == v3
    assert reg.alias_history(model_name, "champion") == [v1, v2, v3]

    back = reg.rollback(model_name)
    assert (back.version, back.previous, back.action) == (v2, v3, "rollback")
    assert reg.resolve(f"{model_name}@champion") == v2
    assert reg.rollback(model_name).version == v1
    with pytest.raises(ModelError, match="no earlier version to roll back to"):
        reg.rollback(model_name)
    assert reg.resolve(f"{model_name}@challenger") == v1  # other aliases untouched

    events = _alias_events(memory_log)
    moves = [(e["alias"], e["version"], e["previous_version"], e["action"]) for e in events]
    assert moves == [
        ("champion", v1, None, "promote"),
        ("champion", v2, v1, "promote"),
        ("champion", v3, v2, "promote"),
        ("challenger", v1, None, "promote"),
        ("champion", v2, v3, "rollback"),
        ("champion", v1, v2, "rollback"),
    ]
    assert all(e["model"] == model_name for e in events)
    reg.close()


def test_versions_list_metrics_lineage_and_aliases(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    v1, v2 = register_versions(model_name, 2)
    reg = Registry(config, memory_log)
    reg.promote(model_name, v2)
    versions = reg.versions(model_name)
    assert [v.version for v in versions] == [v2, v1]
    assert versions[0].aliases == ("champion",) and versions[1].aliases == ()
    assert 0.5 < versions[0].metrics["accuracy"] <= 1.0
    lineage = versions[0].lineage
    assert lineage["kawa.lineage.data.topic"] == "training-data"
    assert lineage["kawa.lineage.data.offsets"] == "0-200"
    listed = {m.name: m for m in reg.list_models()}
    assert listed[model_name].aliases == {"champion": v2}
    assert listed[model_name].latest_version == v2


def test_errors_say_what_to_do(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    reg = Registry(config, memory_log)
    with pytest.raises(ModelNotFound, match="kawa models list"):
        reg.resolve(f"{model_name}@champion")
    (v1,) = register_versions(model_name, 1)
    with pytest.raises(ModelAliasNotFound, match=f"kawa models promote {model_name} VERSION --alias champion"):
        reg.resolve(f"{model_name}@champion")
    with pytest.raises(ModelNotFound, match="has no version 99"):
        reg.promote(model_name, 99)
    with pytest.raises(ModelError, match="invalid model reference"):
        reg.resolve("not a ref")
    assert reg.resolve(f"{model_name}/{v1}") == v1


def test_lineage_helpers_and_code_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tags = tracking.lineage_tags(bucket="xray-images", prefix="2024/", keys=["b", "a"], name="images")
    assert tags["kawa.lineage.images.bucket"] == "xray-images"
    assert tags["kawa.lineage.images.listing_digest"] == tracking.listing_digest(["a", "b"])
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.delenv("KAWA_CODE_VERSION", raising=False)
    assert tracking.code_version(str(repo)) == sha
    (repo / "f").write_text("changed")
    assert tracking.code_version(str(repo)) == sha + "+dirty"
    monkeypatch.setenv("KAWA_CODE_VERSION", "v1.2.3")
    assert tracking.code_version(str(repo)) == "v1.2.3"


def test_offline_tracking_needs_no_mlflow(config: KawaConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAWA_JOB_DIR", str(tmp_path))
    monkeypatch.setenv("KAWA_JOB_ID", "j-offline")
    cfg = config.model_copy(update={"ml": config.ml.model_copy(update={"tracking": False})})
    with tracking.run("x", params={"lr": 0.1}, config=cfg) as run:
        run.log_metric("loss", 0.5, step=1)
        run.log_lineage(topic="t", offsets=(0, 10))
        assert run.log_model(object(), register_as="nope") is None
    lines = [json.loads(line) for line in (tmp_path / "tracking.jsonl").read_text().splitlines()]
    kinds = [line["kind"] for line in lines]
    assert kinds == ["tags", "params", "metrics", "tags", "model"]
    assert lines[0]["data"]["kawa.job_id"] == "j-offline"
    assert lines[2]["data"] == {"loss": 0.5} and lines[2]["step"] == 1


def test_a_move_survives_an_unreachable_log(config: KawaConfig, model_name: str) -> None:
    from kawa.errors import BackendUnavailable

    class DownLog:
        uri = "kafka://down:9092"

        def create_topic(self, *_: Any, **__: Any) -> None:
            raise BackendUnavailable("broker down:9092 unreachable")

    (v1,) = register_versions(model_name, 1)
    reg = Registry(config, DownLog())  # type: ignore[arg-type]
    move = reg.promote(model_name, v1)
    assert move.published is False
    assert reg.resolve(f"{model_name}@champion") == v1
