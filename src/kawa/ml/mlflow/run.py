"""The MLflow-backed tracked run behind :func:`kawa.ml.tracking.run`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from kawa.ml import flavors
from kawa.ml.mlflow.client import client, ensure_experiment, point_fluent_api
from kawa.ml.mlflow.errors import mlflow_errors
from kawa.ml.mlflow.models import MlflowModels
from kawa.ml.runs import Flavor, Run

if TYPE_CHECKING:
    from kawa.config import KawaConfig


class MLflowRun(Run):
    def __init__(self, config: KawaConfig, run_id: str) -> None:
        self.config = config
        self.run_id = run_id
        self.tags = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        with mlflow_errors(f"logging params of run {self.run_id}"):
            mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        with mlflow_errors(f"logging metrics of run {self.run_id}"):
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        self.tags.update(tags)
        with mlflow_errors(f"tagging run {self.run_id}"):
            mlflow.set_tags(dict(tags))

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        import mlflow

        with mlflow_errors(f"logging {path} to run {self.run_id}"):
            mlflow.log_artifact(str(path))

    def log_model(
        self,
        model: Any,
        *,
        flavor: Flavor = "sklearn",
        name: str = "model",
        register_as: str | None = None,
        input_example: Any = None,
        parent_version: int | None = None,
    ) -> int | None:
        implementation = flavors.get(flavor)
        with mlflow_errors(f"logging a {flavor} model to run {self.run_id}"):
            model_uri = implementation.log_model(model, name=name, input_example=input_example)
        if register_as is None:
            return None
        return MlflowModels(self.config).register(
            model_uri, register_as, run_id=self.run_id, tags=self.tags, parent_version=parent_version
        )


@contextmanager
def mlflow_run(
    config: KawaConfig, experiment: str, run_name: str | None, tags: Mapping[str, str]
) -> Iterator[MLflowRun]:
    """An active MLflow run in ``experiment`` (created if missing), tagged with ``tags``."""
    client(config)  # validates the configuration
    import mlflow

    experiment_id = ensure_experiment(config, experiment)
    point_fluent_api(config)
    with mlflow_errors(f"starting a run in {experiment!r}"):
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags))
    with active:
        tracked = MLflowRun(config, active.info.run_id)
        tracked.tags.update(tags)
        yield tracked
