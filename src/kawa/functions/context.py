"""What a handler sees: the :class:`Context` of one invocation and the :class:`Runtime` behind it.

A :class:`Runtime` exists once per function per process and holds what invocations share: the log's
producer, the dedupe store, the object store and the models. Its host hands it the log and the store (or a
:class:`~kawa.backends.Backends`); it opens none from configuration. A :class:`Context` is a cheap
per-invocation view of it, typed: ``ctx.store`` is an :class:`~kawa.store.base.ObjectStore`, ``ctx.model``
returns a :class:`~kawa.functions.types.Predictor`, and there is no raw log handle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import FunctionError
from kawa.events import CloudEvent, event_key, new_event, to_kafka
from kawa.functions.dedupe import DedupeStore, MemoryDedupeStore, Once
from kawa.functions.metrics import FunctionMetrics, UserMetrics
from kawa.functions.types import EventRef, ModelSource, Predictor

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.evaluation.serving import ExperimentSource
    from kawa.functions.app import FunctionSpec
    from kawa.log.base import EventLog, Producer
    from kawa.monitor.records import DecisionRecord, SnapshotSpec
    from kawa.store.base import ObjectStore

_NAMESPACE = uuid.UUID("6f1c2a8e-4b7d-5e0f-9a3c-1d2e3f4a5b6c")


def derived_id(spec: FunctionSpec, event: CloudEvent, tag: str) -> str:
    """A deterministic id for an event that ``spec`` makes from ``event``: a re-run makes the same id, so
    a consumer that deduplicates by ``source`` + ``id`` sees a redelivered reply as a duplicate."""
    return str(uuid.uuid5(_NAMESPACE, f"{spec.qualified_name}\x1f{event_key(event)}\x1f{tag}"))


class RegistryModels:
    """Predictors from the model registry: loaded once, following alias moves (see ModelManager)."""

    def __init__(self, config: KawaConfig, log: EventLog | None) -> None:
        from kawa.ml.predictors import ModelManager

        self.manager = ModelManager(config, log)

    def predictor(self, ref: str) -> Predictor:
        return self.manager.get(ref).current()

    def flush(self, timeout: float | None = None) -> None:
        self.manager.flush(timeout)

    def close(self) -> None:
        self.manager.close()


class Runtime:
    """The shared resources of one function in one process.

    Its host hands it everything it uses: a :class:`~kawa.backends.Backends`, or the ``log`` and the
    ``store`` (or a ``store_factory``) it holds. The runtime never opens a log or a store from configuration
    itself. ``models`` defaults to the registry of ``config``; ``producer`` to one of the log's (tests and
    :func:`kawa.testing.invoke` hand over their own).
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        backends: Backends | None = None,
        config: KawaConfig | None = None,
        log: EventLog | None = None,
        store: ObjectStore | None = None,
        store_factory: Callable[[], ObjectStore] | None = None,
        models: ModelSource | None = None,
        experiments: ExperimentSource | None = None,
        producer: Producer | None = None,
        dedupe: DedupeStore | None = None,
        metrics: FunctionMetrics | None = None,
        app_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.backends = backends
        self.config = config if config is not None else (backends.config if backends is not None else None)
        self._log = log
        self.dedupe = dedupe or MemoryDedupeStore()
        self.metrics = metrics or FunctionMetrics(spec.app, spec.name, spec.topic, spec.group)
        self.logger = logging.getLogger(f"kawa.functions.{spec.app}.{spec.name}")
        self.function_config: dict[str, Any] = {**(app_config or {}), **spec.config}
        self.scope = spec.group
        self._store = store
        self._store_factory = store_factory
        self._models = models
        self._own_models = models is None
        self._experiments = experiments
        self._own_experiments = experiments is None
        self._topics: set[str] = set()
        self._producer = producer
        self._own_producer = producer is None
        self._lock = threading.Lock()

    @property
    def log(self) -> EventLog | None:
        """The event log the host gave (None for a runtime without one, such as kawa.testing's)."""
        if self._log is None and self.backends is not None:
            self._log = self.backends.log
        return self._log

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    log = self.log
                    if log is None:
                        raise FunctionError(
                            f"function {self.spec.qualified_name} has no event log to emit to; "
                            "configure log.uri (e.g. KAWA_LOG=kafka://host:9092)"
                        )
                    self._producer = log.producer()
        return self._producer

    def has_producer(self) -> bool:
        return self._producer is not None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if self._store_factory is not None:
                        self._store = self._store_factory()
                    elif self.backends is not None:
                        self._store = self.backends.store
                    else:
                        raise FunctionError(
                            f"function {self.spec.qualified_name} has no object store: its host gives it one "
                            "(FunctionHost(store_factory=...) or Runtime(backends=...)); in a unit test, "
                            "kawa.testing.invoke gives it an in-memory store"
                        )
        return self._store

    def model(self, ref: str) -> Predictor:
        """The version ``ref`` names now (the context pins it for the rest of the event)."""
        if self._models is None:
            with self._lock:
                if self._models is None:
                    if self.config is None:
                        raise FunctionError(
                            f"function {self.spec.qualified_name} has no model registry to load {ref!r} from: "
                            "its host gives the runtime a configuration (or Backends); in a unit test, pass "
                            f"models={{{ref!r}: fake}} to kawa.testing.invoke"
                        )
                    self._models = RegistryModels(self.config, self.log)
        return self._models.predictor(ref)

    def arm(self, ref: str, experiment: str | None, unit: str) -> Predictor:
        """The predictor ``unit``'s arm of ``experiment`` names (see :mod:`kawa.evaluation.serving`); with
        ``experiment`` None, of whichever experiment runs on ``ref``'s model now (``ref`` itself when none does, or
        when this runtime has no log to read experiments from)."""
        from kawa.evaluation.serving import route

        if experiment is not None:
            return route(self.experiments.get(experiment), ref, unit, self)
        if self._experiments is None and self.log is None:
            return self.model(ref)
        state = self.experiments.running_for(ref.split("@", 1)[0].split("/", 1)[0])
        return self.model(ref) if state is None else route(state, ref, unit, self)

    def predictor(self, ref: str) -> Predictor:
        return self.model(ref)

    @property
    def experiments(self) -> ExperimentSource:
        if self._experiments is None:
            with self._lock:
                if self._experiments is None:
                    log = self.log
                    if log is None:
                        raise FunctionError(
                            f"function {self.spec.qualified_name} has no event log to read experiments from; its "
                            "host gives it one; in a unit test, pass experiments=[spec] to kawa.testing.invoke"
                        )
                    from kawa.evaluation.experiments import ExperimentsView

                    self._experiments = ExperimentsView(log)
        return self._experiments

    def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` on the host's log the first time this runtime writes to it (platform topics such as
        the decisions topic are not declared by the app)."""
        if topic in self._topics or self.log is None:
            return
        from kawa.log.base import TopicSpec

        self.log.create_topic(TopicSpec(topic), exist_ok=True)
        self._topics.add(topic)

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
        """Close what the runtime opened itself (its producer and registry models), never what it was given:
        the store and the log belong to the host."""
        if self._producer is not None and self._own_producer:
            self._producer.close()
            self._producer = None
        if self._models is not None and self._own_models:
            self._models.close()
            self._models = None
        if self._experiments is not None and self._own_experiments:
            close = getattr(self._experiments, "close", None)
            if callable(close):
                close()
            self._experiments = None
        if self._store_factory is not None or self.backends is not None:
            self._store = None  # the host's: a later use asks the host again


class Context:
    """The handler's view of the platform for one event.

    - ``ctx.emit(topic, event)`` — publish to the event log (flushed before the event counts as done); when
      the function declares ``outputs``, only to those topics (and its ``reply_topic``).
    - ``ctx.new_event(type, data)`` — build an event with a deterministic id derived from the input.
    - ``ctx.store`` — the :class:`~kawa.store.base.ObjectStore`; ``ctx.model("name@alias")`` — a
      :class:`~kawa.functions.types.Predictor` (hot-swapped on alias moves, pinned for this event; each
      prediction is linked to this event).
    - ``ctx.once(name, conn=None)`` — guard a side effect so a redelivery does not repeat it.
    - ``ctx.logger``, ``ctx.metrics`` (``incr``/``set``), ``ctx.config`` (the function's settings),
      ``ctx.function`` (its :class:`~kawa.functions.app.FunctionSpec`), ``ctx.attempt`` (1 = first try).

    There is no raw log handle: everything a handler sends goes through ``ctx.emit`` or its return value,
    so the host can flush it before it commits the input.
    """

    __slots__ = ("_decisions", "_emitted", "_models", "_runtime", "_seq", "_started", "attempt", "event")

    def __init__(self, runtime: Runtime, event: CloudEvent, attempt: int = 1) -> None:
        self._runtime = runtime
        self.event = event
        self.attempt = attempt
        self._seq = 0
        self._emitted = 0
        self._models: dict[str, Predictor] = {}
        self._started = time.perf_counter()
        self._decisions = "decisions"  # where this event's decision records (and failure records) go

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
    def store(self) -> ObjectStore:
        return self._runtime.store

    def model(self, ref: str, *, experiment: str | None = None, unit: str | None = None) -> Predictor:
        """The predictor ``ref`` names (``"pneumonia@champion"``); ``.predict(x)``, ``.name``, ``.version``.

        Pinned for this event: every call with the same ``ref`` while handling one event returns the same
        model version, even when the alias moves meanwhile (the next event gets the new version).

        ``experiment``: the unit ``unit`` (a patient, a card: the spec's randomisation unit) gets the model its
        arm names, and every prediction is recorded with the arm and its propensity
        (:class:`~kawa.evaluation.serving.ArmPredictor`; ``.arm``, ``.acts``). A stopped experiment gives
        ``ref`` itself. ``unit`` alone joins whichever experiment runs on the model now — the loop's canary, whose
        name the app cannot know — and serves ``ref`` when none does."""
        if experiment is None and unit is not None and str(unit):
            key = f"{ref}\x1f*\x1f{unit}"
        elif experiment is None:
            key = ref
        elif unit is None or not str(unit):
            raise FunctionError(
                f"ctx.model({ref!r}, experiment={experiment!r}) needs unit=: the key of the unit the experiment "
                "randomises (a patient, a card, an image)"
            )
        else:
            key = f"{ref}\x1f{experiment}\x1f{unit}"
        pinned = self._models.get(key)
        if pinned is None:
            runtime = self._runtime
            any_experiment = experiment is None and unit is not None and str(unit) != ""
            if experiment is None and not any_experiment:
                pinned = runtime.model(ref)
            else:
                pinned = runtime.arm(ref, experiment, str(unit))
            self._models[key] = pinned
        return pinned

    def emit(self, topic: str, event: CloudEvent, *, key: bytes | None = None) -> None:
        """Publish ``event`` to ``topic`` (binary mode). The host flushes before it marks the input done.

        Raises :class:`~kawa.errors.FunctionError` for a topic the function does not declare, when it
        declares its outputs."""
        spec = self._runtime.spec
        if spec.outputs is not None and topic not in spec.outputs:
            declared = ", ".join(repr(t) for t in spec.outputs) or "none"
            raise FunctionError(
                f"function {spec.qualified_name} emitted to topic {topic!r}, which it does not declare "
                f"(its outputs: {declared}); add it to outputs=(...) of @app.function or kawa.App"
            )
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

    def decide(
        self,
        entity: str,
        *,
        model: Predictor,
        score: float | None = None,
        action: str | None = None,
        features: Mapping[str, Any] | None = None,
        snapshot: SnapshotSpec | None = None,
        topic: str = "decisions",  # kawa.monitor.records.DECISIONS_TOPIC (not imported here: it loads numpy)
        decided_at: float | None = None,
    ) -> DecisionRecord:
        """Record the decision this event led to: a ``kawa.monitor.decision`` record on ``topic`` (flushed before
        the event counts as done, like ``emit``), linked to this event, naming ``model``'s version and — when
        ``model`` came from ``ctx.model(ref, experiment=..., unit=...)`` — its experiment, arm and propensity.
        ``features``: the model's inputs; with ``snapshot`` (the app's declaration) only the declared, non-PHI
        ones are kept, else they must already be PHI-free. ``decided_at``: the decision's event time (default: now;
        a replay of history passes the event's own time, so outcomes mature in event time). Monitoring joins
        outcomes to these records and evaluation compares arms on them (its ``latency_ms`` is the time since the
        handler began, the latency guardrail's measure). Returns the record."""
        from kawa.monitor.records import DecisionRecord

        allocation = getattr(model, "allocation", None)
        kept = snapshot.snapshot(features or {}) if snapshot is not None else dict(features or {})
        record = DecisionRecord(
            ref=EventRef.of(self.event), model=model.name, version=model.version, entity=str(entity),
            decided_at=time.time() if decided_at is None else float(decided_at),
            score=None if score is None else float(score), action=action,
            arm=getattr(allocation, "arm", None), propensity=getattr(allocation, "propensity", None),
            features=kept, experiment=getattr(allocation, "experiment", None),
            latency_ms=round((time.perf_counter() - self._started) * 1000, 3),
            spec_hash=getattr(allocation, "spec_hash", None), acting=getattr(allocation, "acting", None),
        )  # fmt: skip
        spec = self._runtime.spec
        self._decisions = topic
        self._runtime.ensure_topic(topic)
        self._runtime.emit(topic, record.to_event(f"kawa://{spec.app}/{spec.name}"))
        self._emitted += 1
        return record

    def record_failure(self, error: BaseException) -> int:
        """The host calls this when the handler failed: a ``kawa.monitor.failure`` record for each experiment
        arm this event was given (:mod:`kawa.monitor.failures`; the error-rate guardrail counts them), on the
        decisions topic, with the error's reason code only. Returns how many were written; a record that cannot
        be written is logged, never raised over the handler's own error."""
        allocated = {id(p): (p, a) for p in self._models.values() if (a := getattr(p, "allocation", None)) is not None}
        if not allocated:
            return 0
        from kawa import deadletter
        from kawa.monitor.failures import FailureRecord

        spec = self._runtime.spec
        written = 0
        for predictor, allocation in allocated.values():
            try:
                record = FailureRecord.of(
                    EventRef.of(self.event), predictor.name, predictor.version, allocation,
                    failed_at=time.time(), attempt=self.attempt, reason=deadletter.classify(error),
                )  # fmt: skip
                self._runtime.ensure_topic(self._decisions)
                self._runtime.emit(self._decisions, record.to_event(f"kawa://{spec.app}/{spec.name}"))
                written += 1
            except Exception as exc:  # the handler's error is the one that counts; this one is said
                self._runtime.logger.error("%s: the failure record of an experiment arm was not written (%s)",
                                           spec.qualified_name, type(exc).__name__)  # fmt: skip
        return written

    def idempotency_key(self, name: str = "") -> str:
        """A stable key for (function, input event, ``name``): use it to make a side effect idempotent."""
        raw = f"{self._runtime.scope}\x1f{event_key(self.event)}\x1f{name}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def once(self, name: str = "", *, conn: Any = None) -> Once:
        """``with ctx.once("write") as fresh: if fresh: ...`` — see :class:`kawa.functions.dedupe.Once`."""
        key = f"{event_key(self.event)}\x1fstep:{name}"
        return Once(self._runtime.dedupe, self._runtime.scope, key, conn)
