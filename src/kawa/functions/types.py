"""The typed parts of the handler API: :class:`ObjectEvent`, :class:`Predictor` and the current event.

A handler is ``(event: CloudEvent, ctx: kawa.Context)`` or, for a bucket trigger,
``(obj: kawa.ObjectEvent, ctx: kawa.Context)``: the runtime reads the S3 notification and hands over one
frozen :class:`ObjectEvent`. ``ctx.model(ref)`` returns a :class:`Predictor`. While a handler runs,
:func:`current_event` names the event it handles, so what it causes (a prediction record) is linked to that
event without the handler passing ids around.

Light on purpose: no SDK is imported here (the store parser is imported when an object event is built).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kawa.events.ref import EventRef

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from kawa.events import CloudEvent
    from kawa.store.base import ObjectReader, ObjectStore

__all__ = [
    "Allocation",
    "EventRef",
    "ModelSource",
    "ObjectEvent",
    "Predictor",
    "allocating",
    "current_allocation",
    "current_event",
    "handling",
]


_current: ContextVar[EventRef | None] = ContextVar("kawa_current_event", default=None)


@dataclass(frozen=True)
class Allocation:
    """What an experiment decided for the prediction being made; the prediction record carries it.

    ``unit`` is the randomisation unit's key as the app gave it (pass a pseudonym when the key is PHI);
    ``propensity`` is the probability the randomisation gave ``arm``; ``acting`` is False for an arm scored in
    shadow (or a holdout), whose score is recorded but must not act; ``spec_hash`` names the exact spec.
    """

    experiment: str
    arm: str
    propensity: float
    unit: str
    acting: bool = True
    spec_hash: str = ""


_allocation: ContextVar[Allocation | None] = ContextVar("kawa_current_allocation", default=None)


def current_allocation() -> Allocation | None:
    """The experiment allocation of the prediction being made in this thread or task, or None."""
    return _allocation.get()


@contextmanager
def allocating(allocation: Allocation) -> Iterator[None]:
    """Within this block, predictions are recorded with ``allocation`` (the experiment router wraps each
    prediction of an arm in it)."""
    token = _allocation.set(allocation)
    try:
        yield
    finally:
        _allocation.reset(token)


def current_event() -> EventRef | None:
    """The event the handler running in this thread or asyncio task handles, or None outside one."""
    return _current.get()


@contextmanager
def handling(ref: EventRef) -> Iterator[None]:
    """Within this block, :func:`current_event` is ``ref`` (the runtime wraps each invocation in it)."""
    token = _current.set(ref)
    try:
        yield
    finally:
        _current.reset(token)


@runtime_checkable
class Predictor(Protocol):
    """One model version, as ``ctx.model("name@alias")`` returns it (pinned for the event being handled).

    ``predict`` is thread-safe; each call is recorded on the predictions topic, linked to the current event.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def ref(self) -> str:
        """The exact version this is, ``name/version`` (the alias it was asked by may move on)."""
        ...

    @property
    def tags(self) -> Mapping[str, str]:
        """The registered version's tags (e.g. what it was trained on)."""
        ...

    def predict(self, inputs: npt.ArrayLike, /) -> np.ndarray[Any, np.dtype[Any]]: ...


class ModelSource(Protocol):
    """Where a runtime gets its predictors: the registry (with hot swaps) or, in tests, fakes."""

    def predictor(self, ref: str) -> Predictor:
        """The version ``ref`` (``name@alias`` or ``name/version``) names now."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every prediction record so far is on the log."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ObjectEvent:
    """One change of one object, as a bucket-triggered handler receives it.

    ``event_name`` has no ``s3:`` prefix (``ObjectCreated:Put``); ``ref`` is the identity of the CloudEvent
    that carried it. :meth:`read` and :meth:`open` read the object from the function's object store.
    """

    bucket: str
    key: str
    event_name: str
    ref: EventRef
    size: int = 0
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    time: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    _store: Callable[[], ObjectStore] | None = field(default=None, repr=False, compare=False)

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")

    @property
    def is_removed(self) -> bool:
        return self.event_name.startswith("ObjectRemoved:")

    def open(self) -> ObjectReader:
        """The object's content as a stream (``with obj.open() as reader: ...``)."""
        if self._store is None:
            from kawa.errors import FunctionError

            raise FunctionError(f"{self.bucket}/{self.key}: this ObjectEvent has no object store to read from")
        return self._store().get(self.bucket, self.key)

    def read(self) -> bytes:
        """The object's whole content (for large objects, stream with :meth:`open`)."""
        with self.open() as reader:
            return reader.read()


def object_event(event: CloudEvent, store: Callable[[], ObjectStore] | None) -> ObjectEvent:
    """The one S3 record ``event`` carries as an :class:`ObjectEvent` reading from ``store()`` (called on
    the first read, so a handler that never reads needs no store).

    Raises :class:`~kawa.errors.EventError` (permanent: no retry can fix it) when ``event`` is not an S3
    notification of exactly one record. The runtime unwraps notifications into one event per record first.
    """
    from kawa import deadletter
    from kawa.errors import EventError
    from kawa.events.s3 import parse_records  # the one S3 envelope parser

    try:
        records = parse_records(event)
    except EventError as exc:
        raise deadletter.tag(
            EventError(f"the handler takes an ObjectEvent, but event type {event.get_type()} is not an S3 "
                       f"notification ({exc}); trigger it with bucket=... or take a CloudEvent"),
            deadletter.INVALID_INPUT,
        ) from None
    if len(records) != 1:
        raise deadletter.tag(
            EventError(f"an S3 notification with {len(records)} records cannot be one ObjectEvent"),
            deadletter.INVALID_INPUT,
        )
    (record,) = records
    return ObjectEvent(
        bucket=record.bucket,
        key=record.key,
        event_name=record.event_name,
        ref=EventRef.of(event),
        size=record.size,
        etag=record.etag,
        version_id=record.version_id,
        sequencer=record.sequencer,
        time=record.time,
        metadata=dict(record.metadata),
        _store=store,
    )
