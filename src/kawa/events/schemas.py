"""Typed schemas (pydantic) of the event types the platform emits; producers build them, consumers read them.

============================  ===========================  ====================================================
event type                    schema                       emitted by
============================  ===========================  ====================================================
``com.amazonaws.s3.<name>``   :class:`S3Record`            the store's notifications (typed view of one record;
                                                           the wire form stays the S3 record, see ``events.s3``)
``kawa.prediction``           :class:`Prediction`          ``ml/prediction_log.py``, one per prediction
``kawa.model.alias.moved``    :class:`AliasMoved`          the model registry, when an alias moves
(dead-letter headers)         :class:`DeadLetterSummary`   functions and routes (``kawa.deadletter``)
============================  ===========================  ====================================================

Apps own the schemas of their own events (the X-ray app's ``dev.kawa.xray.assessed`` is
:class:`kawa.apps.xray.events.XrayAssessed`) and add them with :func:`register_schema`. Readers ignore fields
they do not know (a newer producer may add some) and accept the older forms noted on each schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from kawa.errors import EventError
from kawa.events.ref import EventRef

__all__ = [
    "AliasMoved",
    "DeadLetterSummary",
    "EventSchema",
    "Prediction",
    "S3Record",
    "read_data",
    "register_schema",
    "schema_for",
]

CREATED = "ObjectCreated"
REMOVED = "ObjectRemoved"
PREDICTION_EVENT = "kawa.prediction"
ALIAS_EVENT = "kawa.model.alias.moved"


@pydantic_dataclass(frozen=True)
class S3Record:
    """One change of one object, whatever emitted it (Ceph, MinIO, AWS, Kawa's store). ``event_name`` has no
    ``s3:`` prefix; ``key`` is URL-decoded; ``etag`` has no quotes."""

    event_name: str
    bucket: str
    key: str
    size: int = 0
    etag: str | None = None
    sequencer: str | None = None
    version_id: str | None = None
    time: datetime | None = None
    source: str = ""
    region: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    event_id: str | None = None
    opaque_data: str | None = None
    configuration_id: str | None = None

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith(CREATED + ":")

    @property
    def is_removed(self) -> bool:
        return self.event_name.startswith(REMOVED + ":")


class EventSchema(BaseModel):
    """Base of event data schemas: immutable; unknown fields are ignored when read (forward compatible)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def data(self) -> dict[str, Any]:
        """The event data as JSON-ready values (what a producer passes to ``new_event``)."""
        return self.model_dump(mode="json")


class Prediction(EventSchema):
    """``kawa.prediction``: one prediction of one model version.

    ``event`` is the :class:`~kawa.events.EventRef` of the event the prediction served; ``event_id`` repeats
    its id for readers of the older form. A prediction made inside an experiment carries the
    ``experiment``, the ``arm`` and its ``propensity``, the randomisation ``unit``, whether it ``acting`` (False:
    scored in shadow or for a holdout) and the spec's ``spec_hash``; the others leave them out. Older records
    carry ``event_id`` alone: :attr:`ref` is then None (an id without its source names no event).
    """

    model: str
    version: int
    event: EventRef | None = None
    event_id: str | None = None
    input_shape: list[int]
    input_digest: str | None = None
    input_ref: str | None = None
    output: list[Any] | None = None
    output_digest: str | None = None
    output_shape: list[int] | None = None
    latency_ms: float
    batch_size: int = 1
    time_ms: int
    experiment: str | None = None
    arm: str | None = None
    propensity: float | None = None
    unit: str | None = None
    acting: bool | None = None
    spec_hash: str | None = None

    @property
    def ref(self) -> EventRef | None:
        return self.event

    def data(self) -> dict[str, Any]:
        """Only the fields that have a value (a record has ``input_digest`` or ``input_ref``, ``output`` or
        ``output_digest``), plus ``event`` and ``event_id``, null for a prediction that served no event."""
        return {"event": None, "event_id": None, **self.model_dump(mode="json", exclude_none=True)}


class AliasMoved(EventSchema):
    """``kawa.model.alias.moved``: ``model@alias`` now names ``version`` (``previous_version`` before)."""

    model: str
    alias: str
    version: int
    previous_version: int | None = None
    action: str
    time_ms: int


class DeadLetterSummary(EventSchema):
    """What a dead letter says about itself (:meth:`kawa.deadletter.DeadLetterReason.describe`), as the portal
    and the CLI show it: reason code, Kawa's message (no content), attempts and where the record came from."""

    version: int
    reason: str
    message: str
    attempts: int
    kind: str
    component: str
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    first_failure: str | None = None
    last_failure: str | None = None


_S = TypeVar("_S", bound=EventSchema)
_SCHEMAS: dict[str, type[EventSchema]] = {PREDICTION_EVENT: Prediction, ALIAS_EVENT: AliasMoved}


def register_schema(event_type: str, schema: type[EventSchema]) -> None:
    """Declare the data schema of ``event_type`` (an app's own events); a second, different schema for one
    type is an :class:`~kawa.errors.EventError`."""
    known = _SCHEMAS.get(event_type)
    if known is not None and known is not schema:
        raise EventError(
            f"event type {event_type!r} already has the schema {known.__name__}; give the new events a type of "
            "their own (an app prefixes its types with its reverse domain, e.g. dev.kawa.xray.*)"
        )
    _SCHEMAS[event_type] = schema


def schema_for(event_type: str) -> type[EventSchema] | None:
    return _SCHEMAS.get(event_type)


def read_data(schema: type[_S], data: Any) -> _S:
    """``data`` (a mapping or JSON bytes/text) as ``schema``; :class:`~kawa.errors.EventError` naming the
    first field that is wrong otherwise (never the values: event data may hold patient data)."""
    if isinstance(data, bytes | bytearray | str):
        import json

        try:
            data = json.loads(data)
        except ValueError:
            raise EventError(f"{schema.__name__} data is not JSON") from None
    if not isinstance(data, Mapping):
        raise EventError(f"{schema.__name__} data must be a JSON object, got {type(data).__name__}")
    try:
        return schema.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(data)"
        raise EventError(
            f"{schema.__name__} data is invalid at {where!r}: {first['msg']}; "
            f"{len(exc.errors())} problem(s) in all"
        ) from None
