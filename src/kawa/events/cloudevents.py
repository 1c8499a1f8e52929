"""CloudEvents 1.0 helpers on the ``cloudevents`` SDK.

Every event Kawa writes to the log uses the Kafka *binary* content mode: attributes travel as ``ce_<name>``
headers, ``datacontenttype`` as the ``content-type`` header, the data as the record value. Reading accepts
binary and structured mode (``content-type: application/cloudevents+json``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from kawa.errors import EventError

if TYPE_CHECKING:
    from kawa.log.base import Record

__all__ = ["CloudEvent", "event_key", "from_kafka", "from_record", "is_cloudevent", "new_event", "to_kafka"]

Headers = Sequence[tuple[str, bytes]]
_FORMAT = JSONFormat()


def new_event(
    type: str,
    source: str,
    data: Mapping[str, Any] | str | bytes | None = None,
    *,
    subject: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
    datacontenttype: str | None = None,
    dataschema: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> CloudEvent:
    """Build a CloudEvent 1.0; ``id`` defaults to a UUID4 and ``time`` to now (UTC).

    Dict data defaults to ``application/json``, bytes to ``application/octet-stream``.
    """
    attributes: dict[str, Any] = {
        "type": type,
        "source": source,
        "specversion": "1.0",
        "id": id or str(uuid.uuid4()),
        "time": time or datetime.now(UTC),
    }
    if datacontenttype is None and data is not None:
        if isinstance(data, Mapping):
            datacontenttype = "application/json"
        elif isinstance(data, bytes | bytearray):
            datacontenttype = "application/octet-stream"
        else:
            datacontenttype = "text/plain; charset=utf-8"
    if datacontenttype:
        attributes["datacontenttype"] = datacontenttype
    if subject is not None:
        attributes["subject"] = subject
    if dataschema is not None:
        attributes["dataschema"] = dataschema
    if extensions:
        attributes.update(extensions)
    try:
        return CloudEvent(attributes, dict(data) if isinstance(data, Mapping) else data)
    except BaseCloudEventException as exc:
        raise EventError(f"invalid CloudEvent attributes: {exc}") from exc


def to_kafka(event: CloudEvent) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of ``event`` in the Kafka binary content mode.

    The key is the ``partitionkey`` extension when the event has one.
    """
    message = ce_kafka.to_binary(event, _FORMAT)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    headers = [(name, value) for name, value in message.headers.items() if name != "ce_partitionkey"]
    return key, message.value, headers


def is_cloudevent(headers: Headers) -> bool:
    """Whether a record's headers mark it as a CloudEvent (binary or structured mode)."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == "ce_specversion":
            return True
        if lowered == "content-type" and value.startswith(b"application/cloudevents"):
            return True
    return False


def from_record(record: Record) -> CloudEvent:
    """Decode a log record into a CloudEvent, raising :class:`EventError` when it is not one."""
    return from_kafka(record.key, record.value, record.headers)


def from_kafka(key: bytes | None, value: bytes | None, headers: Headers) -> CloudEvent:
    if not is_cloudevent(headers):
        raise EventError(
            "record is not a CloudEvent: it has neither a ce_specversion header (binary mode) nor "
            "content-type application/cloudevents+json (structured mode)"
        )
    message = ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value or b"")
    try:
        event = ce_kafka.from_kafka(message, _FORMAT)
    except (BaseCloudEventException, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise EventError(f"record is not a valid CloudEvent: {exc}") from exc
    if not isinstance(event, CloudEvent):
        raise EventError(f"unsupported CloudEvents specversion {event.get_specversion()!r}; Kawa reads 1.0")
    return event


def event_key(event: CloudEvent) -> str:
    """The dedupe key of ``event``: :meth:`kawa.events.ref.EventRef.key` of its ``source`` + ``id``."""
    from kawa.events.ref import EventRef

    return EventRef.of(event).key()
