"""The LightGBM trainer: the handbook's protocol, prequential selection, metrics, seeding, registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from kawa.apps.fraud.backfill import numpy_features
from kawa.apps.fraud.baseline import Protocol, prequential, split
from kawa.apps.fraud.errors import InvalidSettings
from kawa.apps.fraud.labels import oracle_labels
from kawa.apps.fraud.sim import SimSettings, Simulation, simulate
from kawa.apps.fraud.train import Candidate, best, fit_lightgbm, select, train, validation_protocol

GRID = [{"num_leaves": 7, "num_boost_round": 25}, {"num_leaves": 15, "num_boost_round": 40}]
SIM = {"customers": 300, "days": 60, "seed": 3, "drift_day": 30}  # the small_sim fixture's table


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("train") / "model.txt"
    return train(**SIM, grid=GRID, k=20, register=False, model_path=str(path))


def test_the_job_reports_model_and_baseline_on_the_protocol_test_days(
    trained: dict[str, Any], small_sim: Simulation
) -> None:
    import lightgbm

    tx = small_sim.tx
    x = numpy_features(tx, oracle_labels(tx, 7))
    train_rows, test_rows = split(tx, Protocol(start_day=39))
    assert trained["train_rows"] == len(train_rows) and trained["test_rows"] == len(test_rows)
    assert trained["params"] in GRID and len(trained["validation"]) == len(GRID)
    booster = lightgbm.Booster(model_file=trained["model_path"])
    s = booster.predict(x[test_rows])
    y = tx.is_fraud[test_rows]
    # Cross-check the logged metrics with scikit-learn on the saved model.
    assert trained["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert trained["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert trained["auc"] > trained["auc_baseline"] and trained["ap"] > trained["ap_baseline"]
    assert trained["ap"] > 5 * y.mean()  # far above the base rate


def test_selection_never_sees_the_test_days(small_sim: Simulation) -> None:
    tx = small_sim.tx
    protocol = Protocol(start_day=39)
    valid = validation_protocol(protocol)
    assert valid.start_day == 39 - 14
    for fold_train, fold_test in prequential(tx, valid, folds=2):
        assert tx.day[fold_test].max() < protocol.test_start and tx.day[fold_train].max() < protocol.test_start
    with pytest.raises(InvalidSettings, match="start the protocol later"):
        select(tx, np.zeros((len(tx), 15)), Protocol(start_day=5), GRID)


def test_best_takes_cp_then_ap_then_the_first() -> None:
    a, b, c = (Candidate({"i": i}, cp, ap, 0.5) for i, (cp, ap) in enumerate([(0.3, 0.2), (0.3, 0.4), (0.1, 0.9)]))
    assert best([a, b, c]) is b
    assert best([a, Candidate({"i": 9}, 0.3, 0.2, 0.5)]) is a


def test_training_is_seeded(small_sim: Simulation) -> None:
    tx = small_sim.tx.take(np.arange(8000))
    x = numpy_features(tx, oracle_labels(tx, 7))
    one, two = (fit_lightgbm(x, tx.is_fraud, GRID[0], seed=1) for _ in range(2))
    other = fit_lightgbm(x, tx.is_fraud, {**GRID[0], "bagging_fraction": 0.5, "bagging_freq": 1}, seed=2)
    assert np.array_equal(one.predict(x), two.predict(x))
    assert not np.array_equal(one.predict(x), other.predict(x))
    assert simulate(SimSettings(**SIM)).tx.tx_id.shape == small_sim.tx.tx_id.shape


def test_registers_the_model_with_lineage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracking off (as on hosts without MLflow): the run's params, metrics, lineage and model go to the
    job's tracking file; nothing is registered."""
    monkeypatch.setenv("KAWA_ML__TRACKING", "off")
    monkeypatch.setenv("KAWA_JOB_DIR", str(tmp_path))
    out = train(**SIM, folds=1, grid=GRID[:1], k=20, register=True)
    assert out["version"] is None and out["promoted"] is False
    lines = (tmp_path / "tracking.jsonl").read_text()
    assert "kawa.lineage.data.source" in lines and "fraud-sim:customers=300,days=60,seed=3" in lines
    assert '"flavor": "lightgbm"' in lines and '"register_as": "fraud-lightgbm"' in lines and '"cp20"' in lines
