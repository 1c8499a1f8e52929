"""MLflow ``python_function`` models: any ``mlflow.pyfunc.PythonModel``. Generic: tried last, since most
MLflow flavours also write a ``python_function`` section."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kawa.ml.flavors.base import LoadedModel, TensorSpec

MLMODEL_KEY = "python_function"
SUFFIXES: tuple[str, ...] = ()
GENERIC = True


def log_model(model: Any, *, name: str, input_example: Any = None) -> str:
    import mlflow.pyfunc

    info = mlflow.pyfunc.log_model(
        name=name, python_model=model, input_example=input_example, pip_requirements=["mlflow", "numpy"]
    )
    return str(info.model_uri)


def load(path: Path, conf: Mapping[str, Any]) -> LoadedModel:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(path))

    def predict(x: np.ndarray) -> np.ndarray:
        out = model.predict(x)
        return np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)

    return LoadedModel("pyfunc", predict, TensorSpec("input-0", None, None), TensorSpec("output-0", None, None))
