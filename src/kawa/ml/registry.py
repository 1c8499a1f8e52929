"""The model registry: registered models, versions, aliases — MLflow underneath.

Embedded: an sqlite tracking store ``<home>/mlflow.db`` with artifacts under ``<home>/mlartifacts``;
distributed: ``ml.tracking_uri`` names an MLflow tracking server.

Guarantees:

- Every alias move (promote, rollback, set) is published as a CloudEvent ``kawa.model.alias.moved`` on the
  ``kawa.models`` topic (key: the model name) *after* the registry holds the new alias — a consumer that
  reads the event and then asks the registry sees the new target.
- Rollback moves an alias back to the version it pointed to before the last move. The history is a stack per
  alias kept in the registered model's tag ``kawa.alias_history.<alias>`` (the last 100 moves), so it lives
  where the registry lives (a remote server included). Concurrent promotes of the same alias race; the last
  write wins in both the alias and its history.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from kawa.errors import ModelAliasNotFound, ModelError, ModelNotFound
from kawa.ml.refs import ModelRef, parse_ref

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from kawa.config import KawaConfig
    from kawa.log.base import EventLog, Producer

log = logging.getLogger("kawa.ml.registry")
HISTORY_TAG = "kawa.alias_history."
HISTORY_LIMIT = 100
ALIAS_EVENT = "kawa.model.alias.moved"


@dataclass(frozen=True)
class ModelVersionInfo:
    name: str
    version: int
    aliases: tuple[str, ...]
    run_id: str | None
    created_ms: int
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredModelInfo:
    name: str
    latest_version: int | None
    aliases: dict[str, int]


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    version: int
    previous: int | None
    action: str
    published: bool = True  # False: the registry moved but the kawa.models event could not be written

    def as_data(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "version": self.version,
            "previous_version": self.previous,
            "action": self.action,
        }


def _not_found(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()


class Registry:
    """Register versions, move aliases, list versions with metrics and lineage.

    ``log``: where alias events go; None opens the configured log on the first move (and closes it in
    :meth:`close`); ``publish=False`` publishes nothing.
    """

    def __init__(self, config: KawaConfig, log: EventLog | None = None, *, publish: bool = True) -> None:
        self.config = config
        self._log = log
        self._own_log = False
        self._publish = publish
        self._producer: Producer | None = None
        self._client: MlflowClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from kawa.ml.mlflow_run import client

            self._client = client(self.config)
        return self._client

    # --- versions ------------------------------------------------------------------------------------

    def register(
        self, model_uri: str, name: str, *, run_id: str | None = None, tags: dict[str, str] | None = None
    ) -> int:
        """Register ``model_uri`` (``models:/m-…``, ``runs:/…``, a path) as a new version of ``name``."""
        from mlflow.exceptions import MlflowException

        from kawa.ml.mlflow_run import provenance_tags

        mlf = self.client
        try:
            try:
                mlf.get_registered_model(name)
            except MlflowException as exc:
                if not _not_found(exc):
                    raise
                mlf.create_registered_model(name)
            # MLflow 3 logged models ("models:/m-…") are registered by id; a server checks the source is its.
            model_id = model_uri[len("models:/") :] if model_uri.startswith("models:/m-") else None
            version = mlf.create_model_version(name, model_uri, run_id=run_id, model_id=model_id)
            for key, value in provenance_tags(tags or {}).items():
                mlf.set_model_version_tag(name, version.version, key, value)
        except MlflowException as exc:
            raise ModelError(f"could not register {model_uri} as {name!r}: {exc.message}") from exc
        return int(version.version)

    def list_models(self) -> list[RegisteredModelInfo]:
        out = []
        for m in self.client.search_registered_models(max_results=1000):
            latest = max((int(v.version) for v in m.latest_versions or []), default=None)
            out.append(RegisteredModelInfo(m.name, latest, {a: int(v) for a, v in (m.aliases or {}).items()}))
        return sorted(out, key=lambda m: m.name)

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of ``name``, newest first, with its run's metrics and its provenance tags."""
        from kawa.ml.mlflow_run import provenance_tags

        by_version: dict[int, list[str]] = {}
        for alias, target in (self._get_model(name).aliases or {}).items():
            by_version.setdefault(int(target), []).append(alias)
        out = []
        for v in self.client.search_model_versions(f"name = '{name}'", max_results=1000):
            metrics: dict[str, float] = {}
            lineage = provenance_tags(dict(v.tags or {}))
            if v.run_id:
                try:
                    run = self.client.get_run(v.run_id)
                    metrics = dict(run.data.metrics)
                    lineage = {**provenance_tags(dict(run.data.tags)), **lineage}
                except Exception:  # the run was deleted; the version stands on its own
                    pass
            out.append(
                ModelVersionInfo(
                    name,
                    int(v.version),
                    tuple(sorted(by_version.get(int(v.version), []))),
                    v.run_id,
                    int(v.creation_timestamp or 0),
                    metrics,
                    lineage,
                )
            )
        return sorted(out, key=lambda v: -v.version)

    def _get_model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelNotFound(
                    f"no registered model {name!r}; `kawa models list` shows the registered ones"
                ) from exc
            raise ModelError(f"registry error for {name!r}: {exc.message}") from exc

    def alias_target(self, name: str, alias: str) -> int | None:
        aliases = self._get_model(name).aliases or {}
        return int(aliases[alias]) if alias in aliases else None

    def resolve(self, ref: str | ModelRef) -> int:
        """The version a reference points to now."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        if parsed.alias is not None:
            target = self.alias_target(parsed.name, parsed.alias)
            if target is None:
                raise ModelAliasNotFound(
                    f"model {parsed.name!r} has no alias {parsed.alias!r}; set it with "
                    f"`kawa models promote {parsed.name} VERSION --alias {parsed.alias}`"
                )
            return target
        assert parsed.version is not None
        self._check_version(parsed.name, parsed.version)
        return parsed.version

    def _check_version(self, name: str, version: int) -> None:
        from mlflow.exceptions import MlflowException

        self._get_model(name)
        try:
            self.client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise ModelNotFound(
                f"model {name!r} has no version {version}; `kawa models versions {name}` lists them"
            ) from exc

    # --- aliases -------------------------------------------------------------------------------------

    def alias_history(self, name: str, alias: str) -> list[int]:
        tags = self._get_model(name).tags or {}
        return [int(v) for v in json.loads(tags.get(HISTORY_TAG + alias, "[]"))]

    def promote(self, name: str, version: int, alias: str = "champion") -> AliasMove:
        """Point ``alias`` at ``version`` (remembering where it pointed, for :meth:`rollback`)."""
        self._check_version(name, version)
        with self._lock:
            previous = self.alias_target(name, alias)
            history = self.alias_history(name, alias)
            if previous is not None and (not history or history[-1] != previous):
                history.append(previous)  # the alias was set outside Kawa
            if previous != version:
                history.append(version)
            self._write(name, alias, version, history)
        return self._announce(AliasMove(name, alias, version, previous, "promote"))

    def rollback(self, name: str, alias: str = "champion") -> AliasMove:
        """Move ``alias`` back to the version it pointed to before its last move."""
        with self._lock:
            current = self.alias_target(name, alias)
            if current is None:
                raise ModelAliasNotFound(f"model {name!r} has no alias {alias!r}; nothing to roll back")
            history = self.alias_history(name, alias)
            if history and history[-1] == current:
                history.pop()
            if not history:
                raise ModelError(
                    f"{name}@{alias} has no earlier version to roll back to; promote one with "
                    f"`kawa models promote {name} VERSION --alias {alias}`"
                )
            target = history[-1]
            self._write(name, alias, target, history)
        return self._announce(AliasMove(name, alias, target, current, "rollback"))

    def _write(self, name: str, alias: str, version: int, history: list[int]) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))
        self.client.set_registered_model_tag(name, HISTORY_TAG + alias, json.dumps(history[-HISTORY_LIMIT:]))

    def _announce(self, move: AliasMove) -> AliasMove:
        """Publish the move. The registry already holds it, so a log failure does not undo it: the move is
        returned with ``published=False`` (followers still see it at their next registry poll)."""
        if not self._publish:
            return move
        from kawa.events import new_event, to_kafka
        from kawa.log.base import TopicSpec

        topic = self.config.ml.models_topic
        try:
            if self._log is None:
                from kawa.log import open_log

                self._log = open_log(self.config.log.uri, self.config)
                self._own_log = True
            if self._producer is None:
                self._log.create_topic(TopicSpec(topic), exist_ok=True)
                self._producer = self._log.producer()
            event = new_event(
                ALIAS_EVENT,
                "kawa/registry",
                {**move.as_data(), "time_ms": int(time.time() * 1000)},
                subject=f"{move.model}@{move.alias}",
                extensions={"partitionkey": move.model},
            )
            key, value, headers = to_kafka(event)
            self._producer.send(topic, value, key=key, headers=headers)
        except Exception as exc:
            log.warning(
                "%s@%s moved to %d but the %s event was not published: %s",
                move.model,
                move.alias,
                move.version,
                topic,
                exc,
            )
            return dataclasses.replace(move, published=False)
        return move

    # --- artifacts -----------------------------------------------------------------------------------

    def local_path(self, name: str, version: int) -> Path:
        """A local directory holding the version's model files (downloaded into the home when remote)."""
        uri = self.client.get_model_version_download_uri(name, str(version))
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        cache = Path(self.config.home).absolute() / "models-cache" / name / str(version)
        marker = cache / ".complete"
        if marker.exists():
            return Path(marker.read_text())
        import mlflow.artifacts

        from kawa.ml.refs import tracking_uri

        cache.mkdir(parents=True, exist_ok=True)
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(cache), tracking_uri=tracking_uri(self.config)
            )
        except Exception as exc:
            raise ModelError(f"could not download {name}/{version} from {uri}: {exc}") from exc
        marker.write_text(str(local))
        return Path(local)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._own_log and self._log is not None:
            self._log.close()
            self._log = None
