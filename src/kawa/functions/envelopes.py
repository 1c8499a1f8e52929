"""Unwrapping transport envelopes so a handler sees the same event in every shape.

Object notifications reach a function as CloudEvents of type ``com.amazonaws.s3.<eventName>`` with the S3
record as data (the CloudEvents AWS S3 adapter shape, which Kawa's store publishes). Two transports wrap
them differently:

- Ceph RGW pushing to Kafka writes the raw notification JSON (``{"Records": [...]}``), not a CloudEvent.
- A Knative KafkaSource turns such a non-CloudEvent record into ``type dev.knative.kafka.event``,
  ``id partition:<p>/offset:<o>``, with the record value as data.

:func:`unwrap` maps both to the S3 CloudEvent shape (same deterministic id as the store gives, so dedupe
works across transports). Events of any other type pass through unchanged. This is not filtering on data:
filters apply to the unwrapped event's attributes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kawa.errors import EventError
from kawa.events import CloudEvent

KAFKA_SOURCE_TYPE = "dev.knative.kafka.event"


def s3_records(data: Any) -> list[Mapping[str, Any]] | None:
    """The S3 records of a notification envelope (dict, JSON text or bytes), or None if it is not one."""
    if isinstance(data, bytes | bytearray | str):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(data, Mapping):
        return None
    records = data.get("Records")
    if not isinstance(records, list) or not records:
        return None
    if not all(isinstance(r, Mapping) and "eventName" in r and isinstance(r.get("s3"), Mapping) for r in records):
        return None
    return list(records)


def s3_events(records: list[Mapping[str, Any]]) -> list[CloudEvent]:
    from kawa.store.records import to_cloudevent

    try:
        return [to_cloudevent(record) for record in records]
    except (KeyError, TypeError, ValueError) as exc:
        raise EventError(f"malformed S3 notification record: {exc!r}") from exc


def unwrap(event: CloudEvent) -> list[CloudEvent]:
    """The events ``event`` carries: a KafkaSource event holding an S3 notification becomes one S3 CloudEvent
    per record; anything else is returned as it is."""
    if event.get_type() != KAFKA_SOURCE_TYPE:
        return [event]
    records = s3_records(event.get_data())
    return [event] if records is None else s3_events(records)


def from_raw_value(value: bytes | None) -> CloudEvent:
    """A raw (non-CloudEvent) Kafka record value as an event: only S3 notifications with one record qualify."""
    records = s3_records(value or b"")
    if records is None:
        raise EventError(
            "record is neither a CloudEvent (no ce_specversion header, not application/cloudevents+json) nor "
            "an S3 notification ({\"Records\": [...]}); publish CloudEvents with kawa.events.to_kafka"
        )
    if len(records) != 1:
        raise EventError(
            f"S3 notification holds {len(records)} records; the host takes one record per message (as Ceph RGW "
            "sends them) — split them upstream"
        )
    return s3_events(records)[0]
