"""What a model flavour is: how to log a model of that kind to MLflow and how to load its files back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its dtype and its shape without the batch axis (None = any size)."""

    name: str
    dtype: np.dtype[Any] | None
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class LoadedModel:
    flavor: str
    predict: PredictFn
    input: TensorSpec
    output: TensorSpec


class FlavorModule(Protocol):
    """The contract of a flavour module (``kawa.ml.flavors.sklearn`` …), registered by name.

    ``MLMODEL_KEY`` is the key of the ``flavors`` mapping of an ``MLmodel`` file this flavour loads;
    ``SUFFIXES`` are bare model files it loads without an ``MLmodel`` (``.onnx``); a ``GENERIC`` flavour
    (pyfunc) is tried only when no specific one matches. Heavy packages are imported inside the functions.
    """

    MLMODEL_KEY: str
    SUFFIXES: tuple[str, ...]
    GENERIC: bool

    def log_model(self, model: Any, *, name: str, input_example: Any = None) -> str:
        """Log ``model`` into the active MLflow run; returns its model URI."""
        ...

    def load(self, path: Path, conf: Mapping[str, Any]) -> LoadedModel:
        """Load the model in directory ``path`` (``conf``: its ``MLmodel`` flavour section) or file ``path``."""
        ...
