"""What a handler sees: the :class:`Context` of one invocation and the :class:`Runtime` behind it.

A :class:`Runtime` exists once per function per process and holds what invocations share (the log's
producer, the dedupe store, the object store and model manager, opened lazily). A :class:`Context` is a
cheap per-invocation view of it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kawa.events import CloudEvent, event_key, new_event, to_kafka
from kawa.functions.dedupe import DedupeStore, MemoryDedupeStore, Once
from kawa.functions.metrics import FunctionMetrics, UserMetrics

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.functions.app import FunctionSpec
    from kawa.log.base import EventLog, Producer

_NAMESPACE = uuid.UUID("6f1c2a8e-4b7d-5e0f-9a3c-1d2e3f4a5b6c")


def derived_id(spec: FunctionSpec, event: CloudEvent, tag: str) -> str:
    """A deterministic id for an event that ``spec`` makes from ``event``: a re-run makes the same id, so
    a consumer that deduplicates by ``source`` + ``id`` sees a redelivered reply as a duplicate."""
    return str(uuid.uuid5(_NAMESPACE, f"{spec.qualified_name}\x1f{event_key(event)}\x1f{tag}"))


def open_configured_store(config: KawaConfig | None, log: EventLog | None) -> Any:
    """The object store the configuration names (``store.uri``), publishing notifications to ``log``."""
    from kawa.config import load_config
    from kawa.store import open_store

    config = config or load_config()
    return open_store(config.store.uri, config, log=log)


class Runtime:
    """The shared resources of one function in one process."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        config: KawaConfig | None = None,
        log: EventLog | None = None,
        dedupe: DedupeStore | None = None,
        store_factory: Callable[[], Any] | None = None,
        metrics: FunctionMetrics | None = None,
        app_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.log = log
        self.dedupe = dedupe or MemoryDedupeStore()
        self.metrics = metrics or FunctionMetrics(spec.app, spec.name, spec.topic, spec.group)
        self.logger = logging.getLogger(f"kawa.functions.{spec.app}.{spec.name}")
        self.function_config: dict[str, Any] = {**(app_config or {}), **spec.config}
        self.scope = spec.group
        self._store_factory = store_factory
        self._store: Any = None
        self._models: Any = None
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    if self.log is None:
                        from kawa.errors import FunctionError

                        raise FunctionError(
                            f"function {self.spec.qualified_name} has no event log to emit to; "
                            "configure log.uri (e.g. KAWA_LOG=kafka://host:9092)"
                        )
                    self._producer = self.log.producer()
        return self._producer

    def has_producer(self) -> bool:
        return self._producer is not None

    @property
    def store(self) -> Any:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    factory = self._store_factory
                    self._store = factory() if factory is not None else open_configured_store(self.config, self.log)
        return self._store

    def model(self, ref: str) -> Any:
        if self._models is None:
            with self._lock:
                if self._models is None:
                    from kawa.config import load_config
                    from kawa.ml.predictors import ModelManager

                    self._models = ModelManager(self.config or load_config(), self.log)
        return self._models.get(ref)

    def emit(self, topic: str, event: CloudEvent, key: bytes | None = None) -> None:
        record_key, value, headers = to_kafka(event)
        self.producer.produce(topic, value, key=record_key if record_key is not None else key, headers=headers)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the log acknowledged everything the invocations so far caused: replies, emitted
        events, dead letters and prediction records. Raises (:class:`~kawa.errors.ProducerError`) when it
        did not within ``timeout``; nothing is dropped, so a later flush waits for the same records."""
        if self._models is not None:
            self._models.flush(timeout)
        if self._producer is not None:
            self._producer.flush(timeout)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._models is not None:
            self._models.close()
            self._models = None
        if self._store is not None and self._store_factory is None and hasattr(self._store, "close"):
            self._store.close()
        self._store = None


class Context:
    """The handler's view of the platform for one event.

    - ``ctx.emit(topic, event)`` — publish to the event log (flushed before the event counts as done).
    - ``ctx.new_event(type, data)`` — build an event with a deterministic id derived from the input.
    - ``ctx.store`` — the object store; ``ctx.model("name@alias")`` — a predictor (hot-swapped on alias moves).
    - ``ctx.once(name, conn=None)`` — guard a side effect so a redelivery does not repeat it.
    - ``ctx.logger``, ``ctx.metrics`` (``incr``/``set``), ``ctx.config`` (the function's settings),
      ``ctx.function`` (its :class:`~kawa.functions.app.FunctionSpec`), ``ctx.attempt`` (1 = first try).
    """

    __slots__ = ("_emitted", "_models", "_runtime", "_seq", "attempt", "event")

    def __init__(self, runtime: Runtime, event: CloudEvent, attempt: int = 1) -> None:
        self._runtime = runtime
        self.event = event
        self.attempt = attempt
        self._seq = 0
        self._emitted = 0
        self._models: dict[str, Any] = {}

    @property
    def function(self) -> FunctionSpec:
        return self._runtime.spec

    @property
    def config(self) -> dict[str, Any]:
        return self._runtime.function_config

    @property
    def logger(self) -> logging.Logger:
        return self._runtime.logger

    @property
    def metrics(self) -> UserMetrics:
        return self._runtime.metrics.user

    @property
    def store(self) -> Any:
        return self._runtime.store

    @property
    def log(self) -> EventLog | None:
        return self._runtime.log

    def model(self, ref: str) -> Any:
        """The predictor ``ref`` names (``"pneumonia@champion"``); ``.predict(x)``, ``.name``, ``.version``.

        Pinned for this event: every call with the same ``ref`` while handling one event returns the same
        model version, even when the alias moves meanwhile (the next event gets the new version)."""
        pinned = self._models.get(ref)
        if pinned is None:
            handle = self._runtime.model(ref)
            current = getattr(handle, "current", None)
            pinned = self._models[ref] = current() if callable(current) else handle
        return pinned

    def emit(self, topic: str, event: CloudEvent, *, key: bytes | None = None) -> None:
        """Publish ``event`` to ``topic`` (binary mode). The host flushes before it marks the input done."""
        self._runtime.emit(topic, event, key=key)
        self._emitted += 1

    def new_event(self, type: str, data: Any = None, *, source: str | None = None, **kwargs: Any) -> CloudEvent:
        """An event whose id derives from the input event and a counter, so a re-run emits equal ids."""
        self._seq += 1
        spec = self._runtime.spec
        return new_event(
            type,
            source or f"kawa://{spec.app}/{spec.name}",
            data,
            id=derived_id(spec, self.event, f"new:{self._seq}"),
            **kwargs,
        )

    def idempotency_key(self, name: str = "") -> str:
        """A stable key for (function, input event, ``name``): use it to make a side effect idempotent."""
        raw = f"{self._runtime.scope}\x1f{event_key(self.event)}\x1f{name}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def once(self, name: str = "", *, conn: Any = None) -> Once:
        """``with ctx.once("write") as fresh: if fresh: ...`` — see :class:`kawa.functions.dedupe.Once`."""
        key = f"{event_key(self.event)}\x1fstep:{name}"
        return Once(self._runtime.dedupe, self._runtime.scope, key, conn)
