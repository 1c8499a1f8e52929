"""The function host: runs an app's functions on an event log, one consumer group per function.

The same host runs inside ``kawa up`` (embedded log), as ``kawa worker`` (a process in the Kafka consumer
group; more processes = more parallelism, partitions rebalance) and in tests (``memory:`` log)::

    with FunctionHost(app, log=open_log("memory:")) as host:
        ...
        host.metrics()["xray.assess"].succeeded

Guarantees, per function: at-least-once delivery with side effects deduplicated by CloudEvent
``source`` + ``id`` (see :mod:`kawa.functions.dedupe`); offsets committed only after success or
dead-lettering; a failing event is retried with exponential backoff, then dead-lettered to
``<topic>.dlq`` with the reason, and never blocks later events (except later events of its key when
``ordered_by_key``); ``stop()`` drains running invocations before it leaves the group.

Replicas are threads of this process or child processes (``replicas=`` on a function, ``HostOptions.replicas``,
``functions.replicas`` in ``kawa.yaml``; see :mod:`kawa.functions.processes`): the same guarantees hold for both.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import ReplicaQuotaExceeded, TopicNotFound
from kawa.functions.app import BUCKET_CREATED_FILTER, App, FunctionSpec
from kawa.functions.context import Runtime
from kawa.functions.dedupe import DedupeStore, MemoryDedupeStore, open_dedupe
from kawa.functions.metrics import FunctionStats
from kawa.functions.options import HostOptions
from kawa.functions.processes import ProcessFunction, replica_mode
from kawa.functions.quota import ReplicaBudget, floors_over
from kawa.functions.runner import FunctionRunner
from kawa.log.base import EventLog, TopicSpec
from kawa.projects.core import DEFAULT_PROJECT, bucket_project

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig

log = logging.getLogger("kawa.functions.host")

__all__ = ["FunctionHost", "HostOptions", "HostedFunction"]

HostedFunction = FunctionRunner | ProcessFunction


class FunctionHost:
    """Runs the functions of ``apps`` (all, or those named in ``functions``) on ``log``."""

    name = "functions"

    def __init__(
        self,
        apps: App | Sequence[App],
        *,
        log: EventLog | None = None,
        backends: Backends | None = None,
        config: KawaConfig | None = None,
        functions: Sequence[str] | None = None,
        dedupe: DedupeStore | None = None,
        store_factory: Callable[[], Any] | None = None,
        options: HostOptions | None = None,
        client_id: str | None = None,
    ) -> None:
        self.apps = [apps] if isinstance(apps, App) else list(apps)
        if log is None and backends is None:
            raise TypeError("FunctionHost needs log= or backends=")
        self.backends = backends
        self.log: EventLog = log if log is not None else backends.log  # type: ignore[union-attr]
        self.config = config if config is not None or backends is None else backends.config
        self.options = options or HostOptions()
        self.client_id = client_id
        self.specs = _select(self.apps, functions)
        self._dedupe = dedupe
        self._own_dedupe = dedupe is None
        self._store_factory = store_factory
        self._store: Any = None
        self._store_lock = threading.Lock()
        self.runners: dict[str, HostedFunction] = {}
        self._started = False

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Create missing topics, wire bucket triggers, join each function's consumer group."""
        if self._started:
            return
        if self._dedupe is None:
            uri = _functions_setting(self.config, "dedupe", "sqlite:") if self.config is not None else "memory:"
            self._dedupe = open_dedupe(uri, self.config) if self.config is not None else MemoryDedupeStore()
        try:
            self._dedupe.prune(self.options.dedupe_retention_s)
        except Exception:
            log.warning("pruning the dedupe store failed", exc_info=True)
        apps = {app.name: app for app in self.apps}
        try:
            budget = self._replica_budget()
            for spec in self.specs:
                grant = partial(budget.claim, spec.qualified_name) if budget is not None else None
                if self.options.create_topics:
                    _ensure_topics(self.log, spec)
                if spec.bucket:
                    _wire_bucket(self._shared_store(), spec)
                mode, reference, child_config = replica_mode(
                    spec, apps[spec.app], options=self.options, config=self.config, log=self.log,
                    dedupe=None if self._own_dedupe else self._dedupe,
                )
                if mode == "process":
                    assert reference is not None and child_config is not None
                    hosted = ProcessFunction(
                        spec, reference=reference, config=child_config, log=self.log, options=self.options,
                        client_id=self.client_id,
                    )
                    if grant is not None:
                        hosted.grant = grant
                    hosted.start()
                    self.runners[spec.qualified_name] = hosted
                    log.info("hosting %s on %s (group %s) with process replicas", spec.qualified_name, spec.topic,
                             spec.group)
                    continue
                runtime = Runtime(
                    spec, config=self.config, log=self.log, dedupe=self._dedupe,
                    store_factory=self._shared_store, app_config=apps[spec.app].config,
                )
                consumer = self.log.consumer(
                    spec.group, [spec.topic], auto_offset_reset=spec.initial_offset,
                    session_timeout_ms=self.options.session_timeout_ms,
                    client_id=self.client_id or f"kawa-fn-{spec.name}",
                )
                runner = FunctionRunner(runtime, consumer, self.options)
                if grant is not None:
                    runner.grant = grant
                runner.start()
                self.runners[spec.qualified_name] = runner
                log.info("hosting %s on %s (group %s)", spec.qualified_name, spec.topic, spec.group)
        except BaseException:
            self.stop()
            raise
        self._started = True

    def stop(self, timeout: float | None = None) -> None:
        """Drain every function (in parallel) and release resources."""
        runners = list(self.runners.values())
        for runner in runners:
            runner.begin_stop()
        for runner in runners:
            runner.stop(timeout)
            runner.close()
        self.runners.clear()
        self._store = None
        if self._own_dedupe and self._dedupe is not None:
            self._dedupe.close()
            self._dedupe = None
        self._started = False

    def __enter__(self) -> FunctionHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- reading ----------------------------------------------------------------------------------

    def metrics(self) -> dict[str, FunctionStats]:
        """A snapshot per function, keyed ``app.function``."""
        return {name: runner.metrics.snapshot() for name, runner in self.runners.items()}

    def runner(self, name: str) -> HostedFunction:
        """The runner of ``app.function`` (or just ``function`` when unambiguous)."""
        if name in self.runners:
            return self.runners[name]
        matches = [r for q, r in self.runners.items() if q.split(".", 1)[1] == name]
        if len(matches) != 1:
            from kawa.errors import FunctionNotFound

            raise FunctionNotFound(f"no single hosted function {name!r}; hosted: {', '.join(self.runners)}")
        return matches[0]

    def _replica_budget(self) -> ReplicaBudget | None:
        """The ``function_replicas`` quotas of the hosted functions' projects (None when none is limited).

        A function belongs to the registered project its topic (``P.name``) or bucket (``P--name``) is prefixed
        with, else to ``default``. Refuses to start when a project's ``min_scale`` floors alone exceed its quota.
        """
        if self.config is None:
            return None
        from kawa.projects.registry import ProjectRegistry

        quotas = ProjectRegistry.in_home(Path(self.config.home).absolute()).quotas()
        limits = {name: quota.function_replicas for name, quota in quotas.items()}
        if all(limit is None for limit in limits.values()):
            return None
        project_of = {s.qualified_name: function_project(s, set(quotas)) for s in self.specs}
        floors = {s.qualified_name: s.scaling_policy().min_scale for s in self.specs}
        for project in sorted(set(project_of.values())):
            mine = {f: floors[f] for f, p in project_of.items() if p == project}
            message = floors_over(project, limits.get(project), mine)
            if message is not None:
                raise ReplicaQuotaExceeded(message)
        return ReplicaBudget(limits, project_of, floors)

    def _shared_store(self) -> Any:
        with self._store_lock:
            if self._store is None:
                factory = self._store_factory
                if factory is not None:
                    self._store = factory()
                elif self.backends is not None:
                    self._store = self.backends.store
                else:
                    from kawa.errors import FunctionError

                    raise FunctionError(
                        "this function host has no object store for bucket triggers and ctx.store; give it one: "
                        "FunctionHost(..., backends=backends) or store_factory=lambda: backends.store"
                    )
            return self._store


def function_project(spec: FunctionSpec, registered: set[str]) -> str:
    """The project a function belongs to: its topic's or bucket's registered prefix, else ``default``."""
    candidates = [spec.topic.partition(".")[0] if "." in spec.topic else ""]
    if spec.bucket:
        candidates.append(bucket_project(spec.bucket, registered))
    return next((c for c in candidates if c and c != DEFAULT_PROJECT and c in registered), DEFAULT_PROJECT)


def _select(apps: Sequence[App], names: Sequence[str] | None) -> list[FunctionSpec]:
    specs = [spec for app in apps for spec in app.functions.values()]
    if not names:
        return specs
    chosen: list[FunctionSpec] = []
    for name in names:
        found = [s for s in specs if name in (s.name, s.qualified_name)]
        if not found:
            from kawa.errors import FunctionNotFound

            known = ", ".join(s.qualified_name for s in specs) or "none"
            raise FunctionNotFound(f"no function {name!r} in the loaded app(s); known: {known}")
        chosen.extend(s for s in found if s not in chosen)
    return chosen


def _functions_setting(config: Any, name: str, default: Any) -> Any:
    section = getattr(config, "functions", None)
    return getattr(section, name, default) if section is not None else default


def _ensure_topics(event_log: EventLog, spec: FunctionSpec) -> None:
    try:
        partitions = event_log.describe_topic(spec.topic).partition_count
    except TopicNotFound:
        log.warning("topic %r does not exist; creating it with 1 partition for %s", spec.topic, spec.qualified_name)
        event_log.create_topic(TopicSpec(spec.topic), exist_ok=True)
        partitions = 1
    event_log.create_topic(TopicSpec(spec.dead_letter_topic, partitions=partitions), exist_ok=True)
    if spec.reply_topic:
        event_log.create_topic(TopicSpec(spec.reply_topic, partitions=partitions), exist_ok=True)


def _wire_bucket(store: Any, spec: FunctionSpec) -> None:
    """Send the bucket's object notifications to the function's topic (the store's notification API)."""
    from kawa.store.rules import NotificationRule

    assert spec.bucket is not None
    created_only = spec.filter.spec == BUCKET_CREATED_FILTER
    events = ("ObjectCreated:*",) if created_only else ("ObjectCreated:*", "ObjectRemoved:*")
    store.create_bucket(spec.bucket, exist_ok=True)
    store.add_notification(NotificationRule(bucket=spec.bucket, topic=spec.topic, events=events))
    log.info("bucket %s notifies topic %s for %s", spec.bucket, spec.topic, spec.qualified_name)
