"""The model registry — the public API for registered models: register, alias, promote, rollback, lineage.

::

    from kawa.backends import open_backends
    from kawa.ml.registry import Registry

    with open_backends() as backends:
        registry = Registry(backends)          # alias moves are published on backends.log
        version = registry.register("runs:/…/model", "fraud", run_id=run_id)
        registry.promote("fraud", version)     # champion → version
        registry.lineage("fraud", version)     # run id, data read, parent version, job, code version
        registry.rollback("fraud")             # champion → the previous champion

MLflow is underneath, reached only through the adapter :mod:`kawa.ml.mlflow`.

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

from kawa.config import KawaConfig
from kawa.errors import ModelAliasNotFound, ModelError
from kawa.ml.mlflow.models import MlflowModels
from kawa.ml.refs import ModelRef, parse_ref
from kawa.ml.runs import Lineage, lineage_from_tags, provenance_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from kawa.backends import Backends
    from kawa.log.base import EventLog, Producer

log = logging.getLogger("kawa.ml.registry")
HISTORY_TAG = "kawa.alias_history."
HISTORY_LIMIT = 100
ALIAS_EVENT = "kawa.model.alias.moved"

__all__ = ["ALIAS_EVENT", "AliasMove", "Lineage", "ModelVersionInfo", "RegisteredModelInfo", "Registry"]


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


class Registry:
    """Register versions, move aliases, list versions with metrics and lineage.

    ``source``: a :class:`~kawa.backends.Backends` (alias moves are published on its log, opened on the
    first move) or a bare configuration (then only on ``log``, when given). The registry never opens a log
    itself. ``publish=False`` publishes nothing.
    """

    def __init__(self, source: KawaConfig | Backends, log: EventLog | None = None, *, publish: bool = True) -> None:
        if isinstance(source, KawaConfig):
            self._backends: Backends | None = None
            self.config = source
        else:
            self._backends, self.config = source, source.config
        self._log = log
        self._publish = publish
        self._producer: Producer | None = None
        self._models = MlflowModels(self.config)
        self._lock = threading.Lock()

    @property
    def client(self) -> MlflowClient:
        """The MLflow client underneath (for what the registry API does not cover)."""
        return self._models.client

    # --- versions ------------------------------------------------------------------------------------

    def register(
        self,
        model_uri: str,
        name: str,
        *,
        run_id: str | None = None,
        tags: dict[str, str] | None = None,
        parent_version: int | None = None,
    ) -> int:
        """Register ``model_uri`` (``models:/m-…``, ``runs:/…``, a path) as a new version of ``name``, with
        the provenance among ``tags`` (job, code version, ``kawa.lineage.*``) and its parent version
        (default: the version ``champion`` points to now)."""
        return self._models.register(model_uri, name, run_id=run_id, tags=tags, parent_version=parent_version)

    def list_models(self) -> list[RegisteredModelInfo]:
        return [RegisteredModelInfo(m.name, m.latest_version, m.aliases) for m in self._models.models()]

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """Every version of ``name``, newest first, with its run's metrics and its provenance tags."""
        by_version: dict[int, list[str]] = {}
        for alias, target in self._models.model(name).aliases.items():
            by_version.setdefault(target, []).append(alias)
        out = []
        for v in self._models.versions(name):
            metrics: dict[str, float] = {}
            lineage = provenance_tags(v.tags)
            found = self._models.run(v.run_id) if v.run_id else None
            if found is not None:  # else the run was deleted; the version stands on its own
                metrics = found[0]
                lineage = {**provenance_tags(found[1]), **lineage}
            aliases = tuple(sorted(by_version.get(v.version, [])))
            out.append(ModelVersionInfo(name, v.version, aliases, v.run_id, v.created_ms, metrics, lineage))
        return sorted(out, key=lambda v: -v.version)

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        """The tags of one version (what it was trained on, its job, its parent…)."""
        return dict(self._models.version(name, version).tags)

    def lineage(self, name: str, version: int) -> Lineage:
        """What ``name``/``version`` was trained on: its run, the data it read, its parent version, the job
        and the code version (from the version's tags, completed by its run's)."""
        record = self._models.version(name, version)
        tags = dict(record.tags)
        found = self._models.run(record.run_id) if record.run_id else None
        if found is not None:
            tags = {**provenance_tags(found[1]), **tags}
        return lineage_from_tags(name, version, record.run_id, tags)

    def alias_target(self, name: str, alias: str) -> int | None:
        return self._models.model(name).aliases.get(alias)

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
        self._models.version(parsed.name, parsed.version)
        return parsed.version

    # --- aliases -------------------------------------------------------------------------------------

    def alias_history(self, name: str, alias: str) -> list[int]:
        tags = self._models.model(name).tags
        return [int(v) for v in json.loads(tags.get(HISTORY_TAG + alias, "[]"))]

    def promote(self, name: str, version: int, alias: str = "champion") -> AliasMove:
        """Point ``alias`` at ``version`` (remembering where it pointed, for :meth:`rollback`)."""
        return self._move(name, version, alias, "promote")

    def set_alias(self, name: str, alias: str, version: int) -> AliasMove:
        """Point ``alias`` at ``version``: :meth:`promote` for any alias, recorded as a ``set``."""
        return self._move(name, version, alias, "set")

    alias = set_alias

    def _move(self, name: str, version: int, alias: str, action: str) -> AliasMove:
        self._models.version(name, version)
        with self._lock:
            previous = self.alias_target(name, alias)
            history = self.alias_history(name, alias)
            if previous is not None and (not history or history[-1] != previous):
                history.append(previous)  # the alias was set outside Kawa
            if previous != version:
                history.append(version)
            self._write(name, alias, version, history)
        return self._announce(AliasMove(name, alias, version, previous, action))

    def rollback(self, name: str, alias: str = "champion") -> AliasMove:
        """Move ``alias`` back to the version it pointed to before its last move (the history is kept on
        the registered model, so the rollback itself is recorded and published like any move)."""
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
        self._models.set_alias(name, alias, version)
        self._models.set_model_tag(name, HISTORY_TAG + alias, json.dumps(history[-HISTORY_LIMIT:]))

    def _event_log(self) -> EventLog | None:
        if self._log is None and self._backends is not None:
            self._log = self._backends.log  # the backends open it, once, for every capability
        return self._log

    def _announce(self, move: AliasMove) -> AliasMove:
        """Publish the move. The registry already holds it, so a log failure does not undo it: the move is
        returned with ``published=False`` (followers still see it at their next registry poll), as it is
        when there is no log to publish on."""
        if not self._publish:
            return move
        from kawa.events import new_event, to_kafka
        from kawa.log.base import TopicSpec

        topic = self.config.ml.models_topic
        try:
            event_log = self._event_log()
            if event_log is None:
                log.info(
                    "%s@%s moved to %d; no event log given, nothing published", move.model, move.alias, move.version
                )
                return dataclasses.replace(move, published=False)
            if self._producer is None:
                event_log.create_topic(TopicSpec(topic), exist_ok=True)
                self._producer = event_log.producer()
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
        return self._models.local_path(name, version)

    def close(self) -> None:
        """Close the producer; the log belongs to whoever handed it in (or to the backends)."""
        if self._producer is not None:
            self._producer.close()
            self._producer = None
