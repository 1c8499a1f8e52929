"""Unwrapping transport envelopes so a handler sees the same event — one per S3 record — in every shape.

Object notifications reach a function as CloudEvents of type ``com.amazonaws.s3.<eventName>`` with one S3
record as data (the CloudEvents AWS S3 adapter shape, which Kawa's store publishes). Transports wrap them
differently:

- Ceph RGW pushing to Kafka writes the raw notification JSON (``{"Records": [...]}``), not a CloudEvent.
- A Knative KafkaSource turns such a non-CloudEvent record into ``type dev.knative.kafka.event``,
  ``id partition:<p>/offset:<o>``, with the record value as data.
- A notification may hold several records.

The envelope is read by the one notification parser, :mod:`kawa.store.parse` (routes use it too).
:func:`unwrap` and :func:`from_raw_value` give **one S3 CloudEvent per record**, each with its own
deterministic id (the one the store gives the record: source, bucket, key, event name, sequencer, etag),
so dedupe works per record and across transports. Events of any other type pass through unchanged. This is
not filtering on data: filters apply to the unwrapped events' attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import EventError
from kawa.events import CloudEvent

if TYPE_CHECKING:
    from kawa.log.base import Record

KAFKA_SOURCE_TYPE = "dev.knative.kafka.event"
S3_TYPE_PREFIX = "com.amazonaws.s3."


def s3_records(data: Any) -> list[Mapping[str, Any]] | None:
    """The S3 records of a notification (anything :mod:`kawa.store.parse` reads), or None if it is not one."""
    from kawa.store.parse import raw_records

    try:
        return list(raw_records(data))
    except EventError:
        return None


def s3_events(records: list[Mapping[str, Any]]) -> list[CloudEvent]:
    """One S3 CloudEvent per record, with the record's own deterministic id."""
    from kawa.store.parse import parse_records
    from kawa.store.records import to_cloudevent

    parse_records(records)  # the parser's checks (bucket, key, event name, size) with its messages
    try:
        return [to_cloudevent(record) for record in records]
    except (KeyError, TypeError, ValueError) as exc:
        raise EventError(
            f"malformed S3 notification record: it lacks a readable {exc.args[0] if exc.args else 'field'}; "
            "each record needs eventName, eventTime, s3.bucket.name and s3.object.key"
        ) from None


def unwrap(event: CloudEvent) -> list[CloudEvent]:
    """The events ``event`` carries: a KafkaSource event holding an S3 notification, or an S3 event holding
    several records, becomes one S3 CloudEvent per record; anything else is returned as it is."""
    kind = str(event.get_type())
    if kind == KAFKA_SOURCE_TYPE:
        records = s3_records(event.get_data())
        return [event] if records is None else s3_events(records)
    if kind.startswith(S3_TYPE_PREFIX):
        records = s3_records(event.get_data())
        if records is not None and len(records) > 1:
            return _split(event, records)
    return [event]


def _split(event: CloudEvent, records: list[Mapping[str, Any]]) -> list[CloudEvent]:
    """An S3 CloudEvent with several records as one event per record: ids ``<id>#<index>``, each with its
    record's type and subject."""
    from kawa.store.records import record_key
    from kawa.store.rules import normalize_event_name

    out = []
    for index, record in enumerate(records):
        attributes = dict(event.get_attributes())
        attributes["id"] = f"{event.get_id()}#{index}"
        try:
            attributes["type"] = S3_TYPE_PREFIX + normalize_event_name(str(record["eventName"]))
            attributes["subject"] = record_key(record)
        except (KeyError, TypeError) as exc:
            raise EventError(f"malformed S3 notification record {index}: it lacks {exc}") from None
        attributes.pop("datacontenttype", None)
        out.append(CloudEvent(attributes, {"Records": [dict(record)]}))
    return out


def from_raw_value(value: bytes | None) -> list[CloudEvent]:
    """A raw (non-CloudEvent) Kafka record value as events: an S3 notification gives one per record (none for
    an ``s3:TestEvent``); anything else is an :class:`~kawa.errors.EventError`."""
    from kawa.store.parse import raw_records

    try:
        records = raw_records(value or b"")
    except EventError as exc:
        raise EventError(
            "record is neither a CloudEvent (no ce_specversion header, not application/cloudevents+json) nor "
            f"an S3 notification ({{\"Records\": [...]}}): {exc}; publish CloudEvents with kawa.events.to_kafka"
        ) from None
    return s3_events(list(records))


def record_events(record: Record) -> list[CloudEvent]:
    """The events of one log record: a CloudEvent (unwrapped, see :func:`unwrap`) or a raw notification."""
    from kawa.events import from_record, is_cloudevent

    if is_cloudevent(record.headers):
        return unwrap(from_record(record))
    return from_raw_value(record.value)
