"""The pneumonia classifier: held-out quality, a broken model caught, ONNX export, registry and champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.train import TrainData, evaluate, fit, generated_data, onnx_risk, to_onnx, train

from .conftest import TrainedModel

SETTINGS = XraySettings()
AUC_THRESHOLD = 0.88
"""Held-out AUC the model must reach on 600 generated images (a 450/150 split); ~0.93-0.97 is typical."""


@pytest.fixture(scope="module")
def data() -> TrainData:
    return generated_data(SETTINGS, 600, seed=21)


def _held_out(data: TrainData, shuffle: bool) -> dict[str, float]:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.y))
    train_idx, test_idx = order[:450], order[450:]
    y = rng.permutation(data.y[train_idx]) if shuffle else data.y[train_idx]
    model = fit(data.x[train_idx], y)
    risk = onnx_risk(to_onnx(model, data.x.shape[1]), data.x[test_idx])
    return evaluate(risk, data.y[test_idx], SETTINGS)


def test_model_reaches_the_stated_held_out_auc(data: TrainData) -> None:
    metrics = _held_out(data, shuffle=False)
    assert metrics["auc"] >= AUC_THRESHOLD, metrics
    assert metrics["sensitivity"] > 0.6 and metrics["specificity"] > 0.8, metrics


def test_a_broken_model_fails_the_same_bar(data: TrainData) -> None:
    """Trained on shuffled labels the same code scores near chance: the AUC check above is not vacuous."""
    metrics = _held_out(data, shuffle=True)
    assert metrics["auc"] < 0.7 < AUC_THRESHOLD, metrics


def test_onnx_export_matches_scikit_learn(data: TrainData) -> None:
    model = fit(data.x[:300], data.y[:300])
    expected = model.predict_proba(data.x[300:])[:, 1]
    assert np.allclose(onnx_risk(to_onnx(model, data.x.shape[1]), data.x[300:]), expected, atol=1e-4)


def test_training_registers_logs_metrics_and_sets_champion_once(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from kawa.config import load_config
    from kawa.ml.registry import Registry

    config = load_config(env={}, home=str(tmp_path / "home"))
    first = train(images=200, config=config, progress=None)
    second = train(images=200, seed=3, config=config, progress=None)
    assert (first["version"], first["promoted"]) == (1, True)
    assert (second["version"], second["promoted"]) == (2, False)  # champion is not moved by a retrain
    registry = Registry(config, publish=False)
    try:
        assert registry.resolve("pneumonia@champion") == 1
        versions = {v.version: v for v in registry.versions("pneumonia")}
        assert set(versions) == {1, 2}
        assert {"auc", "sensitivity", "specificity"} <= set(versions[1].metrics)
        assert versions[1].metrics["auc"] == pytest.approx(first["auc"])
    finally:
        registry.close()
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}").get_run(first["run_id"])
    assert run.data.params["model"] == "standardize+logistic_regression"
    always = train(images=200, seed=4, config=config, progress=None, promote="always")
    assert always["promoted"]


def test_the_shared_model_is_champion_and_good(trained_model: TrainedModel) -> None:
    assert trained_model.result["auc"] >= 0.85, trained_model.result
