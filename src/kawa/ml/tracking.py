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

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from kawa.config import KawaConfig

Flavor = Literal["sklearn", "onnx", "pyfunc"]

TAG_JOB = "kawa.job_id"
TAG_CODE = "kawa.code_version"
TAG_PROJECT = "kawa.project"
LINEAGE_PREFIX = "kawa.lineage."


def code_version(cwd: str | None = None) -> str | None:
    """``KAWA_CODE_VERSION``, else the git commit of ``cwd`` (``+dirty`` when it has changes), else None."""
    if os.environ.get("KAWA_CODE_VERSION"):
        return os.environ["KAWA_CODE_VERSION"]
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


def listing_digest(keys: Iterable[str]) -> str:
    """A digest of a bucket listing (sorted keys; pass ``key\\tetag`` strings to pin contents too)."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(key.encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def lineage_tags(
    *,
    topic: str | None = None,
    partition: int | None = None,
    offsets: tuple[int, int] | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
    keys: Iterable[str] | None = None,
    digest: str | None = None,
    name: str = "data",
) -> dict[str, str]:
    """Tags describing one input: ``topic`` + ``offsets`` (start inclusive, end exclusive) or ``bucket`` +
    listing digest. ``name`` tells several inputs apart (``kawa.lineage.<name>.*``)."""
    p = f"{LINEAGE_PREFIX}{name}."
    tags: dict[str, str] = {}
    if topic is not None:
        tags[p + "topic"] = topic
        if partition is not None:
            tags[p + "partition"] = str(partition)
        if offsets is not None:
            tags[p + "offsets"] = f"{offsets[0]}-{offsets[1]}"
    if bucket is not None:
        tags[p + "bucket"] = bucket
        if prefix:
            tags[p + "prefix"] = prefix
        if keys is not None and digest is None:
            digest = listing_digest(keys)
        if digest:
            tags[p + "listing_digest"] = digest
    return tags


class Run:
    """The common face of an MLflow-backed run and the offline one."""

    run_id: str | None = None
    tags: dict[str, str]

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def set_tags(self, tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def log_lineage(self, **kwargs: Any) -> dict[str, str]:
        """Record what data the run read; see :func:`lineage_tags`."""
        tags = lineage_tags(**kwargs)
        self.set_tags(tags)
        return tags

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        raise NotImplementedError

    def log_model(
        self,
        model: Any,
        *,
        flavor: Flavor = "sklearn",
        name: str = "model",
        register_as: str | None = None,
        input_example: Any = None,
    ) -> int | None:
        """Log ``model`` (an sklearn estimator, an ONNX ``ModelProto``/bytes/path, or a pyfunc
        ``PythonModel``); with ``register_as`` also register it and return the new version number."""
        raise NotImplementedError


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
    base_tags: dict[str, str] = {}
    if os.environ.get("KAWA_JOB_ID"):
        base_tags[TAG_JOB] = os.environ["KAWA_JOB_ID"]
    if os.environ.get("KAWA_JOB_PROJECT"):
        base_tags[TAG_PROJECT] = os.environ["KAWA_JOB_PROJECT"]
    version = code_version()
    if version:
        base_tags[TAG_CODE] = version
    base_tags.update(tags or {})
    if not config.ml.tracking:
        job_dir = os.environ.get("KAWA_JOB_DIR")
        offline = OfflineRun(Path(job_dir, "tracking.jsonl") if job_dir else None)
        offline.set_tags(base_tags)
        if params:
            offline.log_params(params)
        yield offline
        return
    from kawa.ml.mlflow_run import mlflow_run

    with mlflow_run(config, experiment or config.ml.experiment, run_name, base_tags) as tracked:
        if params:
            tracked.log_params(params)
        yield tracked
