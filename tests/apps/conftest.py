"""Fixtures of the X-ray app tests: one model trained per session, shared through its MLflow store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig, load_config

MODEL_IMAGES = 400


@dataclass(frozen=True)
class TrainedModel:
    """A registry (sqlite tracking store + artifacts) holding ``pneumonia`` v1 as champion."""

    tracking_uri: str
    artifact_root: str
    result: dict[str, Any]

    def config(self, home: Path, **overrides: Any) -> KawaConfig:
        ml = {"tracking_uri": self.tracking_uri, "artifact_root": self.artifact_root}
        return load_config(env={}, home=str(home), ml=ml, **overrides)

    def risk(self, config: KawaConfig, x: np.ndarray, name: str = "pneumonia", version: int = 1) -> np.ndarray:
        """P(pneumonia) of model inputs ``x`` straight from the registered ONNX file (no Kawa serving)."""
        import onnxruntime as ort

        from kawa.ml.registry import Registry

        registry = Registry(config, publish=False)
        try:
            path = next(registry.local_path(name, version).rglob("*.onnx"))
        finally:
            registry.close()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"input": x.astype(np.float32)})[0])


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    from kawa.apps.xray.train import train

    root = tmp_path_factory.mktemp("xray-model")
    uri, artifacts = f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()
    config = load_config(env={}, home=str(root / "home"), ml={"tracking_uri": uri, "artifact_root": artifacts})
    result = train(images=MODEL_IMAGES, config=config, progress=None)
    assert result["version"] == 1 and result["promoted"], result
    return TrainedModel(uri, artifacts, result)
