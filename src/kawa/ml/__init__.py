"""The model lifecycle: training jobs, tracking, the model registry, predictors and serving.

Submodules import their heavy SDKs (mlflow, scikit-learn, onnxruntime, lightgbm, torch) inside the functions
that need them, so ``import kawa.ml`` and ``kawa --help`` stay light. Public entry points:

- :mod:`kawa.ml.jobs` — ``submit``, ``wait``, ``follow_progress``, ``result``; ``progress(...)`` inside a job.
- :mod:`kawa.ml.tracking` — the run a job's entry point logs to (params, metrics, lineage, models).
- :mod:`kawa.ml.registry` — :class:`Registry`: register, alias, promote, rollback, lineage.
- :mod:`kawa.ml.flavors` — model flavours by name (sklearn, onnx, lightgbm, pyfunc); ``register`` adds one.
- :mod:`kawa.ml.predictors` — :class:`~kawa.ml.predictors.ModelManager`: loaded, cached, hot-swapped models.
- :mod:`kawa.ml.serving` — ``kawa serve-model``: Open Inference Protocol v2 with micro-batching.
- :mod:`kawa.ml.mlflow` — the MLflow adapter (internal: the only module that talks to MLflow).
- :mod:`kawa.ml.resources` — what the machine has (CPUs, memory, GPUs via NVML / ``nvidia-smi``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kawa.ml.refs import ModelRef, parse_ref

_LAZY = {
    "Registry": "kawa.ml.registry",
    "AliasMove": "kawa.ml.registry",
    "Lineage": "kawa.ml.runs",
    "ModelManager": "kawa.ml.predictors",
    "Progress": "kawa.ml.jobs.progress",
}

if TYPE_CHECKING:
    from kawa.ml.jobs.progress import Progress
    from kawa.ml.predictors import ModelManager
    from kawa.ml.registry import AliasMove, Registry
    from kawa.ml.runs import Lineage

__all__ = ["AliasMove", "Lineage", "ModelManager", "ModelRef", "Progress", "Registry", "parse_ref"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa.ml' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
