"""The run a job's entry point logs to: params, metrics, artifacts, the model and its lineage.

::

    from kawa.ml import tracking

    def train(epochs: int = 3) -> dict:
        with tracking.run("pneumonia", params={"epochs": epochs}) as run:
            run.log_lineage(topic="xray-images", partition=0, offsets=(0, 1200))
            ...
            run.log_metric("loss", loss, step=epoch)
            version = run.log_model(model, flavor="sklearn", register_as="pneumonia")

Inside a job the run is tagged with ``kawa.job_id`` and ``kawa.code_version`` (the git commit of the job's
working directory, or ``KAWA_CODE_VERSION``). With tracking switched off (``KAWA_ML__TRACKING=off``) the
same calls work without MLflow: params and metrics are appended to ``$KAWA_JOB_DIR/tracking.jsonl`` (or
printed) and ``log_model`` registers nothing — this is how GPU hosts without MLflow run jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.config import job_environment
from kawa.ml.runs import (
    LINEAGE_PREFIX,
    TAG_CODE,
    TAG_JOB,
    TAG_PARENT,
    TAG_PROJECT,
    Flavor,
    Run,
    lineage_tags,
    listing_digest,
    provenance_tags,
)

if TYPE_CHECKING:
    import os

    from kawa.config import KawaConfig

__all__ = [
    "LINEAGE_PREFIX",
    "TAG_CODE",
    "TAG_JOB",
    "TAG_PARENT",
    "TAG_PROJECT",
    "Flavor",
    "OfflineRun",
    "Run",
    "code_version",
    "lineage_tags",
    "listing_digest",
    "provenance_tags",
    "run",
]


def code_version(cwd: str | None = None) -> str | None:
    """``KAWA_CODE_VERSION``, else the git commit of ``cwd`` (``+dirty`` when it has changes), else None."""
    pinned = job_environment().code_version
    if pinned:
        return pinned
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


class OfflineRun(Run):
    """Tracking switched off: params and metrics go to a JSON-lines file (or stdout); no MLflow needed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tags = {}

    def _write(self, kind: str, data: Mapping[str, Any], **extra: Any) -> None:
        line = json.dumps({"t": time.time(), "kind": kind, "data": dict(data), **extra}, default=str)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        else:
            print(f"kawa tracking (off): {line}", file=sys.stderr)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._write("params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._write("metrics", metrics, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)
        self._write("tags", tags)

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        self._write("artifact", {"path": str(path)})

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
        self._write("model", {"flavor": flavor, "name": name, "register_as": register_as, "registered": False})
        return None


@contextmanager
def run(
    experiment: str | None = None,
    *,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    config: KawaConfig | None = None,
) -> Iterator[Run]:
    """A tracked run (MLflow when ``ml.tracking`` is on), tagged with the job id and code version."""
    if config is None:
        from kawa.config import load_config

        config = load_config()
    job = job_environment()
    base_tags: dict[str, str] = {}
    if job.job_id:
        base_tags[TAG_JOB] = job.job_id
    if job.project:
        base_tags[TAG_PROJECT] = job.project
    version = code_version()
    if version:
        base_tags[TAG_CODE] = version
    base_tags.update(tags or {})
    if not config.ml.tracking:
        offline = OfflineRun(Path(job.job_dir, "tracking.jsonl") if job.job_dir else None)
        offline.set_tags(base_tags)
        if params:
            offline.log_params(params)
        yield offline
        return
    from kawa.ml.mlflow.run import mlflow_run

    with mlflow_run(config, experiment or config.ml.experiment, run_name, base_tags) as tracked:
        if params:
            tracked.log_params(params)
        yield tracked
