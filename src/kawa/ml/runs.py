"""The run contract and the tags Kawa writes on runs and model versions.

Shared by :mod:`kawa.ml.tracking` (the public entry), :mod:`kawa.ml.mlflow` (the MLflow adapter) and
:mod:`kawa.ml.registry`; it imports none of them, so none of them import each other in a circle.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TAG_JOB = "kawa.job_id"
TAG_CODE = "kawa.code_version"
TAG_PROJECT = "kawa.project"
TAG_PARENT = "kawa.parent_version"
LINEAGE_PREFIX = "kawa.lineage."
KAWA_TAGS = (TAG_JOB, TAG_CODE, TAG_PROJECT, TAG_PARENT)

Flavor = str
"""A flavour's registered name (``sklearn``, ``onnx``, ``pyfunc``, ``lightgbm``…); see :mod:`kawa.ml.flavors`."""


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
    source: str | None = None,
    description: str | None = None,
    name: str = "data",
) -> dict[str, str]:
    """Tags describing one input: ``topic`` + ``offsets`` (start inclusive, end exclusive), ``bucket`` +
    listing digest, or any ``source`` reference (``folder:/data``, ``generated:seed=0``); ``description``
    says it in words for people (``"generated images"``). ``name`` tells inputs apart (``kawa.lineage.<name>.*``)."""
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
    if source is not None:
        tags[p + "source"] = source
    if description is not None:
        tags[p + "description"] = description
    return tags


def provenance_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags worth copying from a run to its model version: job, code version, project, parent, lineage."""
    return {k: v for k, v in tags.items() if k in KAWA_TAGS or k.startswith(LINEAGE_PREFIX)}


@dataclass(frozen=True)
class Lineage:
    """What a model version was made from.

    ``data`` holds each input the run recorded with ``run.log_lineage(..., name=...)``: its fields
    (``topic``/``partition``/``offsets``, ``bucket``/``prefix``/``listing_digest``, ``source``,
    ``description``) by input name. ``parent_version`` is the version it derives from (by default the one
    ``champion`` pointed to when it was registered).
    """

    name: str
    version: int
    run_id: str | None
    parent_version: int | None
    job_id: str | None
    code_version: str | None
    data: dict[str, dict[str, str]] = field(default_factory=dict)

    def described(self, input_name: str = "data") -> str | None:
        """What input ``input_name`` was, in words (its ``description``, else its ``source``)."""
        found = self.data.get(input_name, {})
        return found.get("description") or found.get("source")


def lineage_from_tags(name: str, version: int, run_id: str | None, tags: dict[str, str]) -> Lineage:
    """Read a :class:`Lineage` from a version's (and its run's) provenance tags."""
    data: dict[str, dict[str, str]] = {}
    for key, value in tags.items():
        if key.startswith(LINEAGE_PREFIX):
            input_name, _, part = key[len(LINEAGE_PREFIX) :].rpartition(".")
            data.setdefault(input_name or part, {})[part if input_name else "value"] = value
    parent = tags.get(TAG_PARENT)
    return Lineage(
        name,
        version,
        run_id,
        int(parent) if parent and parent.isdigit() else None,
        tags.get(TAG_JOB),
        tags.get(TAG_CODE),
        data,
    )


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
        """Record what data the run read; see :func:`lineage_tags`. The tags are copied onto the version
        :meth:`log_model` registers, where :func:`kawa.ml.registry.lineage` reads them."""
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
        parent_version: int | None = None,
    ) -> int | None:
        """Log ``model`` in ``flavor`` (an sklearn estimator, an ONNX ``ModelProto``/bytes/path, a pyfunc
        ``PythonModel``, a LightGBM booster…); with ``register_as`` also register it and return the new
        version number. ``parent_version`` is recorded as the version it derives from (default: the
        version ``champion`` pointed to when it was registered)."""
        raise NotImplementedError
