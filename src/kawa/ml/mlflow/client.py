"""An MLflow client for a configuration, and experiments (created with artifacts under the Kawa home)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from kawa.errors import TrackingUnavailable
from kawa.ml.mlflow.errors import mlflow_errors
from kawa.ml.refs import artifact_root, registry_uri, require_tracking, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from kawa.config import KawaConfig

_setup_lock = threading.Lock()


def _quiet_mlflow() -> None:
    # MLflow prints its alembic migrations at INFO.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def client(config: KawaConfig) -> MlflowClient:
    """An MLflow client for this configuration's tracking and registry URIs."""
    require_tracking(config)
    _quiet_mlflow()
    from mlflow import MlflowClient

    uri = tracking_uri(config)
    if uri.startswith("sqlite:///"):
        from kawa.ml.mlflow.seed import seed_sqlite

        db = Path(uri[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        if registry_uri(config) == uri:
            seed_sqlite(db, artifact_root(config))
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=registry_uri(config))
    except Exception as exc:
        raise TrackingUnavailable(f"cannot open MLflow tracking at {uri}: {exc}") from exc


def ensure_experiment(config: KawaConfig, name: str) -> str:
    """The id of experiment ``name``, created (artifacts under the Kawa home when embedded) if missing."""
    mlf = client(config)
    with _setup_lock, mlflow_errors(f"experiment {name!r}"):
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


def point_fluent_api(config: KawaConfig) -> None:
    """Point MLflow's fluent API (``mlflow.start_run``, ``mlflow.<flavor>.log_model``) at this configuration.

    ``mlflow.set_tracking_uri`` would also write ``MLFLOW_TRACKING_URI`` into the process environment; Kawa
    never writes the environment, so the adapter sets MLflow's process-wide URIs directly (as that call
    does, minus the environment). As with ``set_tracking_uri``, the last configuration wins process-wide.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _setup_lock:
        setattr(tracking_utils, "_tracking_uri", tracking_uri(config))  # noqa: B010 - private, untyped
        setattr(registry_utils, "_registry_uri", registry_uri(config))  # noqa: B010
