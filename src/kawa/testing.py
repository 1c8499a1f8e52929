"""Unit-testing a handler: :func:`invoke` runs it on one event, with no log, no store server, no model file.

::

    from kawa.testing import invoke, s3_created

    out = invoke(assess, s3_created("xray-images", "a.png", body=png_bytes),
                 models={"pneumonia@champion": lambda x: [0.9]})
    assert out.outcome == "ok" and out.replies[0].get_data()["label"] == "Pneumonia"
    assert out.store.head("xray-images-processed", "a.png").size > 0

The handler runs through the runtime the function host uses (the envelope unwrapping, the trigger's bucket
scope, the filter, the handler call with its ``ObjectEvent`` or ``CloudEvent``, deterministic reply ids,
permanent errors, declared outputs), once: no retries, no dedupe, no commit. The object store is an
in-memory one unless you pass yours; models are the fakes you pass.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from kawa.evaluation.experiments import ExperimentState
    from kawa.evaluation.spec import ExperimentSpec
    from kawa.events import CloudEvent
    from kawa.functions.app import FunctionSpec, Handler
    from kawa.functions.types import Allocation, EventRef, Predictor
    from kawa.log.base import DeliveryCallback, Headers, RecordMetadata
    from kawa.store.base import ObjectStore

__all__ = [
    "Invocation",
    "Prediction",
    "cloud_event",
    "invoke",
    "s3_created",
    "s3_removed",
]

Outcome = Literal["ok", "skipped", "dead-lettered", "failed"]


class _Predicts(Protocol):
    def predict(self, inputs: Any, /) -> Any: ...


FakeModel = _Predicts | Callable[[Any], Any]
"""What ``models=`` takes per reference: an object with ``predict(x)`` or a plain callable ``f(x)``. It may
carry ``name``, ``version`` and ``tags``; otherwise the name comes from the reference and the version is 1."""


@dataclass(frozen=True)
class Prediction:
    """One call of a fake model: which model, its inputs and outputs, and the event it was linked to."""

    model: str
    version: int
    inputs: Any
    outputs: Any
    event: EventRef | None
    allocation: Allocation | None = None
    """The experiment allocation it was made under (arm, propensity, unit), when the handler passed
    ``experiment=`` to ``ctx.model``."""


@dataclass
class Invocation:
    """What one :func:`invoke` did.

    ``outcome``: ``ok`` (handled), ``skipped`` (the filter or the bucket scope kept it from the handler),
    ``dead-lettered`` (a permanent error, or a foreign bucket with ``on_foreign="dead-letter"``: the host
    would dead-letter it at once) or ``failed`` (an error the host would retry, then dead-letter).
    ``reason`` says why in Kawa's words (what the dead letter would say); ``reason_code`` is the
    dead-letter reason code (``invalid-input``, ``handler-error`` …); ``error`` is the exception itself.
    """

    outcome: Outcome
    store: ObjectStore
    replies: list[CloudEvent] = field(default_factory=list)
    emitted: list[tuple[str, CloudEvent]] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    reason: str | None = None
    reason_code: str | None = None
    error: BaseException | None = None

    def emitted_to(self, topic: str) -> list[CloudEvent]:
        """The events ``ctx.emit`` published to ``topic``."""
        return [event for to, event in self.emitted if to == topic]


def invoke(
    function: Handler | FunctionSpec,
    event: CloudEvent,
    store: ObjectStore | None = None,
    models: Mapping[str, FakeModel] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    buckets: Sequence[str] = (),
    experiments: Sequence[ExperimentSpec | ExperimentState] = (),
    shadow: bool = False,
) -> Invocation:
    """Run ``function`` (a handler decorated with ``@app.function`` or ``app.get(name)``) on ``event``.

    ``store`` defaults to an empty in-memory store; an event from :func:`s3_created` with a ``body`` puts
    that object in it first. ``models`` maps references (``"pneumonia@champion"``) to fakes.
    ``config`` overrides the function's settings (``ctx.config``). ``buckets`` are created in the store
    first, as the platform creates an app's buckets before its functions run (the trigger's buckets are
    always created). ``experiments`` are the experiments ``ctx.model(ref, experiment=..., unit=...)`` finds
    (specs run, in ``shadow`` mode when asked; give an ``ExperimentState`` for a stopped one); each prediction
    then carries its :class:`~kawa.functions.types.Allocation`.
    """
    from kawa import deadletter
    from kawa.errors import EventError
    from kawa.events.s3 import unwrap
    from kawa.functions.app import spec_of
    from kawa.functions.context import Runtime
    from kawa.functions.invoke import invoke as invoke_once
    from kawa.functions.invoke import screen

    spec = spec_of(function)
    if store is None:
        from kawa.store.memory import MemoryStore

        store = MemoryStore()
    for bucket in (*spec.scope.buckets, *buckets):
        store.create_bucket(bucket, exist_ok=True)
    _seed(store, event)
    result = Invocation("ok", store)
    recorder = _Recorder()
    fakes = _FakeModels(models or {}, result.predictions)
    from kawa.evaluation.serving import StaticExperiments

    runtime = Runtime(
        spec, store=store, models=fakes, producer=recorder, app_config={**spec.app_config, **(config or {})},
        experiments=StaticExperiments.of(*experiments, shadow=shadow),
    )  # fmt: skip
    try:
        try:
            events = unwrap(event)
        except EventError as exc:
            return _ended(result, "dead-lettered", exc, deadletter.for_error(exc, attempts=1, kind="function",
                                                                            component=spec.qualified_name))
        for one in events:
            screened = screen(spec, one)
            if screened is not None:
                if screened.dead_letter:
                    result.outcome, result.reason_code = "dead-lettered", deadletter.FOREIGN_BUCKET
                elif result.outcome == "ok":
                    result.outcome = "skipped"
                result.reason = screened.reason
                continue
            outcome = invoke_once(runtime, one)
            result.replies.extend(outcome.replies)
            if outcome.status != "ok":
                why = deadletter.for_error(outcome.error, attempts=1, kind="function", component=spec.qualified_name)
                _ended(result, "dead-lettered" if outcome.status == "permanent" else "failed", outcome.error, why)
    finally:
        result.emitted.extend(recorder.events())
        runtime.close()
    return result


def _ended(result: Invocation, outcome: Outcome, error: BaseException | None, why: Any) -> Invocation:
    result.outcome, result.error, result.reason, result.reason_code = outcome, error, why.message, why.reason
    return result


# --- event builders -----------------------------------------------------------------------------------

_bodies: weakref.WeakKeyDictionary[CloudEvent, tuple[str, str, bytes, str | None]] = weakref.WeakKeyDictionary()
_sequence = 0
_sequence_lock = threading.Lock()


def s3_created(
    bucket: str,
    key: str,
    body: bytes = b"",
    size: int | None = None,
    *,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    event_name: str = "ObjectCreated:Put",
    time: datetime | None = None,
    source: str = "kawa:s3",
) -> CloudEvent:
    """The notification Kawa's store publishes when ``bucket/key`` is written (one S3 record in a CloudEvent).

    :func:`invoke` puts ``body`` into its store as that object first (unless the store already has it);
    ``size`` defaults to ``len(body)`` and the ETag to its MD5, as S3 reports them.
    """
    etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
    event = _s3_event(event_name, bucket, key, len(body) if size is None else size, etag, metadata, time, source)
    _bodies[event] = (bucket, key, bytes(body), content_type)
    return event


def s3_removed(
    bucket: str, key: str, *, event_name: str = "ObjectRemoved:Delete", time: datetime | None = None,
    source: str = "kawa:s3",
) -> CloudEvent:
    """The notification of ``bucket/key`` being deleted."""
    return _s3_event(event_name, bucket, key, None, None, None, time, source)


def cloud_event(
    type: str, data: Mapping[str, Any] | str | bytes | None = None, *, source: str = "/tests",
    id: str | None = None, subject: str | None = None, extensions: Mapping[str, Any] | None = None,
) -> CloudEvent:
    """A CloudEvent 1.0 of ``type`` (``id`` defaults to a UUID, ``time`` to now)."""
    from kawa.events import new_event

    return new_event(type, source, data, id=id, subject=subject, extensions=extensions)


def _s3_event(
    event_name: str, bucket: str, key: str, size: int | None, etag: str | None,
    metadata: Mapping[str, str] | None, time: datetime | None, source: str,
) -> CloudEvent:
    from kawa.store.records import make_record, to_cloudevent

    global _sequence
    with _sequence_lock:
        _sequence += 1
        sequencer = f"{_sequence:016X}"
    record = make_record(
        event_name, bucket, key, size=size, etag=etag, sequencer=sequencer, region="",
        configuration_id="kawa-testing", metadata=metadata, when=time, event_source=source,
    )
    return to_cloudevent(record)


def _seed(store: ObjectStore, event: CloudEvent) -> None:
    try:
        seeded = _bodies.get(event)
    except TypeError:
        seeded = None
    if seeded is None:
        return
    from kawa.errors import ObjectNotFound

    bucket, key, body, content_type = seeded
    store.create_bucket(bucket, exist_ok=True)
    try:
        store.head(bucket, key)
    except ObjectNotFound:
        store.put(bucket, key, body, content_type=content_type)


# --- what the runtime is given instead of a log and a registry ----------------------------------------


class _Recorder:
    """A :class:`~kawa.log.base.Producer` that keeps what it is given (encoded, as a log would take it)."""

    def __init__(self) -> None:
        self._records: list[tuple[str, bytes | None, bytes | None, Headers]] = []
        self._lock = threading.Lock()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        with self._lock:
            self._records.append((topic, key, value, tuple(headers)))

    def flush(self, timeout: float | None = None) -> None:
        return None

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        from kawa.log.base import RecordMetadata

        with self._lock:
            self._records.append((topic, key, value, tuple(headers)))
            offset = len(self._records) - 1
        return RecordMetadata(topic, 0, offset, timestamp_ms or 0)

    def close(self, timeout: float | None = None) -> None:
        return None

    def events(self) -> list[tuple[str, CloudEvent]]:
        from kawa.events import from_kafka

        with self._lock:
            records = list(self._records)
        return [(topic, from_kafka(key, value, headers)) for topic, key, value, headers in records]


class _FakeModels:
    """The :class:`~kawa.functions.types.ModelSource` of :func:`invoke`: the fakes it was given."""

    def __init__(self, models: Mapping[str, FakeModel], predictions: list[Prediction]) -> None:
        self._models = dict(models)
        self._predictions = predictions

    def predictor(self, ref: str) -> Predictor:
        fake = self._models.get(ref)
        if fake is None:
            from kawa.errors import ModelNotFound

            given = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(
                f"the handler asked for model {ref!r}, which this test does not provide (it provides: {given}); "
                f"pass models={{{ref!r}: fake}} to kawa.testing.invoke"
            )
        return _FakePredictor(ref, fake, self._predictions)

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self) -> None:
        return None


class _FakePredictor:
    def __init__(self, ref: str, fake: FakeModel, predictions: list[Prediction]) -> None:
        from kawa.ml.refs import parse_ref

        parsed = parse_ref(ref)
        self.name: str = str(getattr(fake, "name", parsed.name))
        self.version: int = int(getattr(fake, "version", parsed.version or 1))
        self.ref = f"{self.name}/{self.version}"
        self.tags: dict[str, str] = dict(getattr(fake, "tags", None) or {})
        self._fake = fake
        self._predictions = predictions

    def predict(self, inputs: npt.ArrayLike, /) -> np.ndarray[Any, np.dtype[Any]]:
        import numpy as np

        from kawa.functions.types import current_allocation, current_event

        predict = getattr(self._fake, "predict", None)
        raw = predict(inputs) if callable(predict) else self._fake(inputs)  # type: ignore[operator]
        out = np.asarray(raw)
        self._predictions.append(
            Prediction(self.name, self.version, inputs, out, current_event(), current_allocation())
        )
        return out
