"""The one parser of bucket notifications, and the S3 CloudEvents Kawa makes of them.

Accepted, in any nesting: the S3 envelope ``{"Records": [...]}`` from Ceph RGW (``eventName`` without the
``s3:`` prefix, ``size`` as a string, ``eventId``/``opaqueData``), MinIO (``s3:`` prefix, integer size,
URL-encoded keys, ``userMetadata``) and AWS/moto (``s3:`` prefix, URL-encoded keys); a single record; a
CloudEvent (object, structured JSON, or a log :class:`~kawa.log.base.Record` in binary or structured mode)
whose data is one of these, which covers Kawa's own notifications and a Knative KafkaSource delivery
(``dev.knative.kafka.event`` carrying the Kafka value); an SNS notification envelope (``Message``) as SQS
delivers it. An AWS ``s3:TestEvent`` yields no events.

- :func:`parse_records` reads any of these as typed :class:`~kawa.events.schemas.S3Record` records;
  :func:`raw_records` gives the records as they arrived (for bridges that forward them unchanged).
- :func:`to_cloudevent` wraps one record as the CloudEvents AWS S3 adapter does (type
  ``com.amazonaws.s3.<eventName>``, source ``<eventSource>.<region>.<bucket>``, subject = key), with a
  deterministic id (:func:`record_event_id`), so a redelivery deduplicates on its
  :class:`~kawa.events.EventRef`.
- :func:`unwrap`, :func:`from_raw_value` and :func:`record_events` give a function **one S3 CloudEvent per
  record** in every transport shape (a Ceph raw push, a KafkaSource event, a multi-record notification); events
  of any other type pass through unchanged. This is not filtering on data: filters apply to the unwrapped
  events' attributes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from kawa.errors import EventError
from kawa.events.cloudevents import CloudEvent, from_record, is_cloudevent, new_event
from kawa.events.schemas import CREATED, REMOVED, S3Record

if TYPE_CHECKING:
    from kawa.log.base import Record

__all__ = [
    "CREATED",
    "EVENT_SOURCE",
    "KAFKA_SOURCE_TYPE",
    "REMOVED",
    "S3_TYPE_PREFIX",
    "S3Record",
    "from_raw_value",
    "normalize_event_name",
    "parse_records",
    "raw_records",
    "record_event_id",
    "record_events",
    "record_key",
    "to_cloudevent",
    "unwrap",
]

KAFKA_SOURCE_TYPE = "dev.knative.kafka.event"
S3_TYPE_PREFIX = "com.amazonaws.s3."
EVENT_SOURCE = "kawa:s3"
_ENCODED_KEY_SOURCES = ("aws:s3", "minio:s3")  # these URL-encode keys in records (Ceph and Kawa do not)
_MAX_DEPTH = 6


# --- one record -------------------------------------------------------------------------------------


def normalize_event_name(name: str) -> str:
    """``s3:ObjectCreated:Put`` (MinIO, AWS) and ``ObjectCreated:Put`` (Ceph) → ``ObjectCreated:Put``."""
    return name[3:] if name.startswith("s3:") else name


def record_key(record: Mapping[str, Any]) -> str:
    """The object key of a record, URL-decoded where the emitter encodes it (AWS, moto, MinIO)."""
    key = str(record["s3"]["object"]["key"])
    return unquote_plus(key) if record.get("eventSource") in _ENCODED_KEY_SOURCES else key


def record_event_id(record: Mapping[str, Any]) -> str:
    """A deterministic CloudEvent id of a record (source, bucket, key, event name, sequencer or time, ETag,
    version), so a redelivered notification can be deduplicated on source + id."""
    obj = record["s3"]["object"]
    parts = [
        record.get("eventSource", ""),
        record["s3"]["bucket"]["name"],
        record_key(record),
        record.get("eventName", ""),
        str(obj.get("sequencer") or record.get("eventTime", "")),
        str(obj.get("eTag", "")),
        str(obj.get("versionId", "")),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def to_cloudevent(record: Mapping[str, Any]) -> CloudEvent:
    """Wrap a record as the CloudEvents AWS S3 adapter does: type ``com.amazonaws.s3.<eventName>``,
    source ``<eventSource>.<region>.<bucket>``, subject = key, time = eventTime, data ``{"Records": [..]}``."""
    name = normalize_event_name(str(record["eventName"]))
    bucket = record["s3"]["bucket"]["name"]
    when = datetime.fromisoformat(str(record["eventTime"]).replace("Z", "+00:00"))
    return new_event(
        type=f"{S3_TYPE_PREFIX}{name}",
        source=f"{record.get('eventSource', EVENT_SOURCE)}.{record.get('awsRegion', '')}.{bucket}",
        data={"Records": [dict(record)]},
        subject=record_key(record),
        id=record_event_id(record),
        time=when,
    )


# --- reading any envelope ---------------------------------------------------------------------------


def parse_records(payload: Any) -> list[S3Record]:
    """Every S3 event record in ``payload`` as an :class:`S3Record` (see the module docstring).

    Raises :class:`~kawa.errors.EventError` for anything that is not a bucket notification.
    """
    return [_event(record) for record in _records(payload, 0)]


def raw_records(payload: Any) -> list[dict[str, Any]]:
    """The S3 event records in ``payload`` as they arrived (for bridges that forward them unchanged)."""
    return [dict(record) for record in _records(payload, 0)]


def _records(payload: Any, depth: int) -> list[Mapping[str, Any]]:
    if depth > _MAX_DEPTH:
        raise EventError("notification payload is nested too deeply to be an S3 event")
    from kawa.log.base import Record

    if isinstance(payload, Record):
        if is_cloudevent(payload.headers):
            return _records(from_record(payload), depth + 1)
        return _records(payload.value, depth + 1)
    if isinstance(payload, CloudEvent):
        return _records(payload.get_data(), depth + 1)
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventError(f"notification payload is not UTF-8 JSON: {exc}") from None
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise EventError(f"notification payload is not JSON: {exc}") from None
    if isinstance(payload, list):
        return [r for item in payload for r in _records(item, depth + 1)]
    if not isinstance(payload, Mapping):
        raise EventError(f"notification payload must be a JSON object, got {type(payload).__name__}")
    if "Records" in payload:
        records = payload["Records"]
        if not isinstance(records, list):
            raise EventError("'Records' of an S3 notification must be a list")
        return [r for item in records for r in _records(item, depth + 1)]
    if "specversion" in payload:  # structured-mode CloudEvent
        if payload.get("data_base64") is not None:
            return _records(base64.b64decode(payload["data_base64"]), depth + 1)
        return _records(payload.get("data"), depth + 1)
    if payload.get("Type") == "Notification" and "Message" in payload:  # SNS envelope
        return _records(payload["Message"], depth + 1)
    if payload.get("Event") == "s3:TestEvent":
        return []
    if "eventName" in payload and isinstance(payload.get("s3"), Mapping):
        return [payload]
    raise EventError(
        f"not an S3 bucket notification (no 'Records', 'eventName' or CloudEvent data): keys {sorted(payload)[:8]}"
    )


def _event(record: Mapping[str, Any]) -> S3Record:
    try:
        s3 = record["s3"]
        obj = s3.get("object") or {}
        bucket = str(s3["bucket"]["name"])
        key = record_key(record)
        name = normalize_event_name(str(record["eventName"]))
    except (KeyError, TypeError) as exc:
        raise EventError(f"S3 event record lacks {exc}: needs eventName, s3.bucket.name and s3.object.key") from None
    try:
        size = int(obj.get("size") or 0)
    except (TypeError, ValueError):
        raise EventError(f"S3 event record for {bucket}/{key} has a non-numeric size {obj.get('size')!r}") from None
    return S3Record(
        event_name=name,
        bucket=bucket,
        key=key,
        size=size,
        etag=_text(obj.get("eTag") or obj.get("etag"), strip='"'),
        sequencer=_text(obj.get("sequencer")),
        version_id=_text(obj.get("versionId")),
        time=_time(record.get("eventTime")),
        source=str(record.get("eventSource") or ""),
        region=str(record.get("awsRegion") or ""),
        metadata=_metadata(obj),
        event_id=_text(record.get("eventId")),
        opaque_data=_text(record.get("opaqueData")),
        configuration_id=_text(s3.get("configurationId")),
    )


def _text(value: Any, strip: str = "") -> str | None:
    if value is None:
        return None
    text = str(value).strip(strip)
    return text or None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _metadata(obj: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    items: Iterable[tuple[Any, Any]]
    raw = obj.get("metadata")
    if isinstance(raw, list):  # Ceph: [{"key": "x-amz-meta-foo", "val": "bar"}]
        items = [(i.get("key"), i.get("val")) for i in raw if isinstance(i, Mapping)]
    elif isinstance(raw, Mapping):
        items = raw.items()
    else:
        items = []
    user = obj.get("userMetadata")  # MinIO: {"X-Amz-Meta-Foo": "bar", "content-type": ...}
    if isinstance(user, Mapping):
        items = [*items, *((k, v) for k, v in user.items() if str(k).lower().startswith("x-amz-meta-"))]
    for name, value in items:
        if name is None:
            continue
        lowered = str(name).lower()
        out[lowered.removeprefix("x-amz-meta-")] = "" if value is None else str(value)
    return out


# --- one S3 CloudEvent per record, in every transport shape -----------------------------------------


def s3_records(data: Any) -> list[Mapping[str, Any]] | None:
    """The S3 records of a notification (anything :func:`parse_records` reads), or None if it is not one."""
    try:
        return list(raw_records(data))
    except EventError:
        return None


def s3_events(records: list[Mapping[str, Any]]) -> list[CloudEvent]:
    """One S3 CloudEvent per record, with the record's own deterministic id."""
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
    if is_cloudevent(record.headers):
        return unwrap(from_record(record))
    return from_raw_value(record.value)
