"""Reference profiles next to the model version: written by training, read by monitoring.

Training logs the :class:`~kawa.monitor.sketch.Profile` of its data as the MLflow artifact
``kawa/reference_profile.json`` of its run (:func:`log_reference_profile`); the version registered from that run
then has a reference, which :func:`load_reference_profile` reads back by model name and version. A version whose
run has no profile is a :class:`NoReferenceProfile` that says how to give it one.

::

    with tracking.run("sepsis") as run:
        reference = build_profile(columns, score=scores)
        log_reference_profile(run, reference)
        version = run.log_model(model, register_as="sepsis")
    ...
    reference = load_reference_profile(Registry(config), "sepsis", version)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kawa.monitor.errors import MonitorError
from kawa.monitor.sketch import Profile

if TYPE_CHECKING:
    from kawa.ml.registry import Registry
    from kawa.ml.runs import Run

__all__ = ["REFERENCE_PROFILE_ARTIFACT", "NoReferenceProfile", "load_reference_profile", "log_reference_profile"]

REFERENCE_PROFILE_ARTIFACT = "kawa/reference_profile.json"
_HOW = "train it with a reference profile (see docs/monitoring.md)"


class NoReferenceProfile(MonitorError):
    """A model version has no reference profile, so its decisions cannot be compared with its training data."""


def log_reference_profile(run: Run, profile: Profile) -> str:
    """Write ``profile`` (its :meth:`~Profile.to_json`) as the artifact ``kawa/reference_profile.json`` of ``run``;
    returns the artifact path. With tracking off (an offline run) the file is written under the job's directory
    (or a temporary one) and the offline run records its path."""
    text = profile.to_json()
    from kawa.ml.mlflow.run import MLflowRun

    if isinstance(run, MLflowRun) and run.run_id is not None:
        from kawa.ml.mlflow.client import client
        from kawa.ml.mlflow.errors import mlflow_errors

        with mlflow_errors(f"logging the reference profile to run {run.run_id}"):
            client(run.config).log_text(run.run_id, text, REFERENCE_PROFILE_ARTIFACT)
        return REFERENCE_PROFILE_ARTIFACT
    from kawa.config import job_environment

    base = Path(job_environment().job_dir or tempfile.mkdtemp(prefix="kawa-profile-"))
    path = base / REFERENCE_PROFILE_ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    run.log_artifact(path)
    return str(path)


def load_reference_profile(registry: Registry, model: str, version: int) -> Profile:
    """The reference profile logged by the run that produced ``model`` version ``version``.

    :class:`NoReferenceProfile` when the version has no run or its run no profile; the registry's own errors
    (no such model or version) pass through."""
    run_id = registry.lineage(model, version).run_id
    if run_id is None:
        raise NoReferenceProfile(f"{model} version {version} was registered without a training run; {_HOW}")
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="kawa-profile-") as tmp:
        try:
            local = registry.client.download_artifacts(run_id, REFERENCE_PROFILE_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise NoReferenceProfile(
                f"{model} version {version} has no reference profile (run {run_id} holds no "
                f"{REFERENCE_PROFILE_ARTIFACT}); {_HOW}"
            ) from exc
        return Profile.from_json(Path(local).read_text())
