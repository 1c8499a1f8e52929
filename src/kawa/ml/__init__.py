"""The model lifecycle: training jobs, tracking, the model registry, predictors and serving.

Submodules import their heavy SDKs (mlflow, scikit-learn, onnxruntime, torch) inside the functions that need
them, so ``import kawa.ml`` and ``kawa --help`` stay light.

- :mod:`kawa.ml.resources` — what the machine has (CPUs, memory, GPUs via NVML / ``nvidia-smi``).
- :mod:`kawa.ml.jobs` — job specs, the local scheduler, Kubernetes manifests.
- :mod:`kawa.ml.tracking` — the run context a job's entry point logs to (params, metrics, lineage, models).
- :mod:`kawa.ml.registry` — registered models, versions and aliases (MLflow underneath); alias events.
- :mod:`kawa.ml.predictors` — :class:`~kawa.ml.predictors.ModelManager`: loaded, cached, hot-swapped models.
- :mod:`kawa.ml.serving` — ``kawa serve-model``: Open Inference Protocol v2 with micro-batching.
"""

from __future__ import annotations

from kawa.ml.refs import ModelRef, parse_ref

__all__ = ["ModelRef", "parse_ref"]
