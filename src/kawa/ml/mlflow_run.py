"""MLflow underneath :mod:`kawa.ml.tracking` and :mod:`kawa.ml.registry` (imported only when used)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import BackendUnavailable, ModelError
from kawa.ml.refs import artifact_root, registry_uri, require_tracking, tracking_uri
from kawa.ml.tracking import LINEAGE_PREFIX, TAG_CODE, TAG_JOB, TAG_PROJECT, Flavor, Run

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from kawa.config import KawaConfig

_setup_lock = threading.Lock()


def client(config: KawaConfig) -> MlflowClient:
    """An MLflow client for this configuration's tracking and registry URIs."""
    require_tracking(config)
    _quiet_mlflow(config)
    from mlflow import MlflowClient

    uri = tracking_uri(config)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=registry_uri(config))
    except Exception as exc:
        raise BackendUnavailable(f"cannot open MLflow tracking at {uri}: {exc}") from exc


def _quiet_mlflow(config: KawaConfig) -> None:
    # MLflow writes ~/.config/mlflow and prints its alembic migrations; keep it inside the Kawa home.
    os.environ.setdefault("MLFLOW_CONFIG_DIR", str(Path(config.home).absolute() / "mlflow-config"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def ensure_experiment(config: KawaConfig, name: str) -> str:
    """The id of experiment ``name``, created (artifacts under the Kawa home when embedded) if missing."""
    mlf = client(config)
    with _setup_lock:
        existing = mlf.get_experiment_by_name(name)
        if existing is not None:
            return str(existing.experiment_id)
        root = artifact_root(config)
        location = f"{root.rstrip('/')}/{name}" if root else None
        try:
            return str(mlf.create_experiment(name, artifact_location=location))
        except Exception:
            again = mlf.get_experiment_by_name(name)  # another process created it first
            if again is None:
                raise
            return str(again.experiment_id)


class MLflowRun(Run):
    def __init__(self, config: KawaConfig, run_id: str) -> None:
        self.config = config
        self.run_id = run_id
        self.tags = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        self.tags.update(tags)
        mlflow.set_tags(dict(tags))

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        import mlflow

        mlflow.log_artifact(str(path))

    def log_model(
        self,
        model: Any,
        *,
        flavor: Flavor = "sklearn",
        name: str = "model",
        register_as: str | None = None,
        input_example: Any = None,
    ) -> int | None:
        import mlflow

        # Explicit requirements: MLflow's inference runs a subprocess per model (seconds).
        if flavor == "sklearn":
            import mlflow.sklearn
            import sklearn

            info = mlflow.sklearn.log_model(
                model,
                name=name,
                input_example=input_example,
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            )
        elif flavor == "onnx":
            import mlflow.onnx
            import onnx

            if isinstance(model, bytes):
                model = onnx.load_from_string(model)
            elif isinstance(model, str | os.PathLike):
                model = onnx.load(str(model))
            info = mlflow.onnx.log_model(
                model, name=name, input_example=input_example, pip_requirements=["onnx", "onnxruntime"]
            )
        elif flavor == "pyfunc":
            import mlflow.pyfunc

            info = mlflow.pyfunc.log_model(
                name=name, python_model=model, input_example=input_example, pip_requirements=["mlflow", "numpy"]
            )
        else:
            raise ModelError(f"unknown model flavor {flavor!r}: use sklearn, onnx or pyfunc")
        if register_as is None:
            return None
        from kawa.ml.registry import Registry

        return Registry(self.config).register(info.model_uri, register_as, run_id=self.run_id, tags=self.tags)


@contextmanager
def mlflow_run(
    config: KawaConfig, experiment: str, run_name: str | None, tags: Mapping[str, str]
) -> Iterator[MLflowRun]:
    client(config)  # validates and quiets
    import mlflow

    experiment_id = ensure_experiment(config, experiment)
    mlflow.set_tracking_uri(tracking_uri(config))
    mlflow.set_registry_uri(registry_uri(config))
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as active:
        tracked = MLflowRun(config, active.info.run_id)
        tracked.tags.update(tags)
        yield tracked


KAWA_TAGS = (TAG_JOB, TAG_CODE, TAG_PROJECT)


def provenance_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags worth copying from a run to its model version: job, code version, project, lineage."""
    return {k: v for k, v in tags.items() if k in KAWA_TAGS or k.startswith(LINEAGE_PREFIX)}
