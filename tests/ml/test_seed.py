"""A fresh embedded MLflow database is a copy of a migrated template: it works like one MLflow made, keeps the
Default experiment's artifacts under the home, and an existing database is never touched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.config import load_config
from kawa.ml.mlflow.seed import seed_sqlite, template_path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("xdg")
        mp.setenv("XDG_CACHE_HOME", str(root))
        yield root


def test_a_new_home_gets_a_working_registry_from_the_template(cache: Path, tmp_path: Path) -> None:
    from kawa.ml.mlflow.client import client, ensure_experiment

    config = load_config(home=str(tmp_path / ".kawa"))
    mlf = client(config)  # seeds <home>/mlflow.db
    assert template_path().is_relative_to(cache) and template_path().exists()
    assert (tmp_path / ".kawa" / "mlflow.db").exists()
    default = mlf.get_experiment("0")
    assert default.artifact_location == (tmp_path / ".kawa").absolute().joinpath("mlartifacts").as_uri() + "/0"
    experiment = ensure_experiment(config, "seeded")
    run = mlf.create_run(experiment)
    mlf.log_metric(run.info.run_id, "auc", 0.9)
    mlf.create_registered_model("seeded-model")
    version = mlf.create_model_version("seeded-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert int(version.version) == 1
    assert mlf.get_metric_history(run.info.run_id, "auc")[0].value == 0.9


def test_an_existing_database_is_never_touched(cache: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not mine to replace")
    assert seed_sqlite(db, None) is False
    assert db.read_bytes() == b"not mine to replace"


def test_the_template_is_built_once_and_concurrent_seeds_make_one_database(cache: Path, tmp_path: Path) -> None:
    assert seed_sqlite(tmp_path / "first.db", None)
    built = template_path().stat().st_mtime_ns
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(seed_sqlite(tmp_path / "shared.db", None)))
               for _ in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert template_path().stat().st_mtime_ns == built
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary copies left behind"
