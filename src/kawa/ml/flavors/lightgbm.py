"""LightGBM models (MLflow's ``lightgbm`` flavour): a ``lightgbm.Booster`` or a scikit-learn-API model.

LightGBM is an optional extra (``pip install 'kawa[lightgbm]'``), imported only when a model is logged or
loaded. ``predict`` of a ``Booster`` returns what ``Booster.predict`` does (for a binary objective, the
probability of the positive class); of an ``LGBMClassifier`` its ``predict_proba`` column of class 1 when
binary (a risk score, as the fraud app needs), else its ``predict``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kawa.errors import ModelLoadError
from kawa.ml.flavors.base import LoadedModel, TensorSpec

MLMODEL_KEY = "lightgbm"
SUFFIXES: tuple[str, ...] = ()
GENERIC = False
MISSING = "LightGBM models need the lightgbm package: pip install 'kawa[lightgbm]'"


def _require() -> Any:
    try:
        return importlib.import_module("lightgbm")  # optional: no stubs needed to type-check Kawa
    except ImportError as exc:
        raise ModelLoadError(MISSING) from exc


def log_model(model: Any, *, name: str, input_example: Any = None) -> str:
    lightgbm = _require()
    import mlflow.lightgbm

    info = mlflow.lightgbm.log_model(
        model, name=name, input_example=input_example, pip_requirements=[f"lightgbm=={lightgbm.__version__}"]
    )
    return str(info.model_uri)


def load(path: Path, conf: Mapping[str, Any]) -> LoadedModel:
    lightgbm = _require()
    import mlflow.lightgbm

    model = mlflow.lightgbm.load_model(str(path))
    if isinstance(model, lightgbm.Booster):
        n = int(model.num_feature())
        fn = model.predict
    else:
        n = int(getattr(model, "n_features_in_", 0) or 0)
        classes = getattr(model, "classes_", None)
        if hasattr(model, "predict_proba") and classes is not None and len(classes) == 2:
            proba = model.predict_proba

            def fn(x: np.ndarray) -> np.ndarray:
                return np.asarray(proba(x))[:, 1]

        else:
            fn = model.predict

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x))

    return LoadedModel(
        "lightgbm",
        predict,
        TensorSpec("input-0", np.dtype(np.float64), (n,) if n else None),
        TensorSpec("output-0", None, None),
    )
