"""scikit-learn estimators (MLflow's ``sklearn`` flavour); ``predict`` is the estimator's ``predict``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kawa.ml.flavors.base import LoadedModel, TensorSpec

MLMODEL_KEY = "sklearn"
SUFFIXES: tuple[str, ...] = ()
GENERIC = False


def log_model(model: Any, *, name: str, input_example: Any = None) -> str:
    import mlflow.sklearn
    import sklearn

    # Explicit requirements: MLflow's inference runs a subprocess per model (seconds).
    info = mlflow.sklearn.log_model(
        model, name=name, input_example=input_example, pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
    )
    return str(info.model_uri)


def load(path: Path, conf: Mapping[str, Any]) -> LoadedModel:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(str(path))
    n = getattr(model, "n_features_in_", None)
    fn = model.predict

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x))

    return LoadedModel(
        "sklearn",
        predict,
        TensorSpec("input-0", np.dtype(np.float64), (int(n),) if n else None),
        TensorSpec("output-0", None, None),
    )
