"""One parser for every bucket notification Kawa may receive, and ordering by ``sequencer``.

Accepted, in any nesting: the S3 envelope ``{"Records": [...]}`` from Ceph RGW (``eventName`` without the
``s3:`` prefix, ``size`` as a string, ``eventId``/``opaqueData``), MinIO (``s3:`` prefix, integer size,
URL-encoded keys, ``userMetadata``) and AWS/moto (``s3:`` prefix, URL-encoded keys); a single record; a
CloudEvent (object, structured JSON, or a log :class:`~kawa.log.base.Record` in binary or structured mode)
whose data is one of these, which covers Kawa's own notifications and a Knative KafkaSource delivery
(``dev.knative.kafka.event`` carrying the Kafka value); an SNS notification envelope (``Message``) as SQS
delivers it. An AWS ``s3:TestEvent`` yields no events.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kawa.errors import EventError
from kawa.store.records import record_key
from kawa.store.rules import CREATED, REMOVED, normalize_event_name

_MAX_DEPTH = 6


@dataclass(frozen=True)
class ObjectEvent:
    """One change of one object, whatever emitted it. ``event_name`` has no ``s3:`` prefix."""

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


def parse_records(payload: Any) -> list[ObjectEvent]:
    """Every S3 event record in ``payload`` as an :class:`ObjectEvent` (see the module docstring).

    Raises :class:`~kawa.errors.EventError` for anything that is not a bucket notification.
    """
    return [_event(record) for record in _records(payload, 0)]


def _records(payload: Any, depth: int) -> list[Mapping[str, Any]]:
    if depth > _MAX_DEPTH:
        raise EventError("notification payload is nested too deeply to be an S3 event")
    from kawa.events import CloudEvent
    from kawa.log.base import Record

    if isinstance(payload, Record):
        from kawa.events import from_record, is_cloudevent

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


def _event(record: Mapping[str, Any]) -> ObjectEvent:
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
    return ObjectEvent(
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


# --- ordering by sequencer --------------------------------------------------------------------------


def sequencer_value(sequencer: str | None) -> int:
    """A sequencer as an integer (hex; comparing ints is comparing the strings after left-padding with zeros).
    A missing or malformed sequencer is -1: older than any real one."""
    if not sequencer:
        return -1
    try:
        return int(sequencer, 16)
    except ValueError:
        return -1


def order_events(events: Iterable[ObjectEvent]) -> list[ObjectEvent]:
    """Events sorted so that those of one object come in sequencer order (stable otherwise)."""
    return sorted(events, key=lambda e: (e.bucket, e.key, sequencer_value(e.sequencer)))


def latest_per_object(events: Iterable[ObjectEvent]) -> dict[tuple[str, str], ObjectEvent]:
    """The newest event per ``(bucket, key)`` by sequencer (later arrival wins a tie)."""
    latest: dict[tuple[str, str], ObjectEvent] = {}
    for event in events:
        current = latest.get((event.bucket, event.key))
        if current is None or sequencer_value(event.sequencer) >= sequencer_value(current.sequencer):
            latest[(event.bucket, event.key)] = event
    return latest


class SequencerTracker:
    """Remembers the highest sequencer seen per object; :meth:`accept` drops duplicates and stale events.

    Events without a sequencer are always accepted (nothing to order them by).
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def accept(self, event: ObjectEvent) -> bool:
        value = sequencer_value(event.sequencer)
        if value < 0:
            return True
        ident = (event.bucket, event.key)
        if value <= self._seen.get(ident, -1):
            return False
        self._seen[ident] = value
        return True


def raw_records(payload: Any) -> list[dict[str, Any]]:
    """The S3 event records in ``payload`` as they arrived (for bridges that forward them unchanged)."""
    return [dict(record) for record in _records(payload, 0)]


# --- acting only on the buckets a trigger names ------------------------------------------------------

ON_FOREIGN = ("skip", "dead-letter")


class BucketScope:
    """The buckets a function's trigger or a route's source names. A Ceph topic may carry the notifications
    of several buckets (an output bucket among them), so a record of any other bucket is *foreign*: it is
    never processed — skipped and counted (``on_foreign="skip"``) or dead-lettered (``"dead-letter"``).

    An empty scope accepts every bucket. :meth:`note` logs why a record was skipped, at most once per
    ``log_every_s`` per bucket (a busy shared topic must not flood the log).
    """

    def __init__(self, buckets: Iterable[str] = (), on_foreign: str = "skip", *, log_every_s: float = 60.0) -> None:
        if on_foreign not in ON_FOREIGN:
            raise EventError(f"on_foreign must be 'skip' or 'dead-letter', got {on_foreign!r}")
        self.buckets = frozenset(buckets)
        self.on_foreign = on_foreign
        self.log_every_s = log_every_s
        self._logged: dict[str, float] = {}

    @property
    def dead_letters(self) -> bool:
        return self.on_foreign == "dead-letter"

    def is_foreign(self, event: ObjectEvent) -> bool:
        return bool(self.buckets) and event.bucket not in self.buckets

    def reason(self, event: ObjectEvent) -> str:
        """Why ``event`` is not acted on, in words fit for a log line or a dead letter (no key: keys may
        name patients)."""
        names = ", ".join(sorted(self.buckets))
        return f"the notification is for bucket {event.bucket!r}, which the trigger does not name (it names {names})"

    def note(self, logger: Any, component: str, event: ObjectEvent) -> None:
        import time

        now = time.monotonic()
        last = self._logged.get(event.bucket)
        if last is not None and now - last < self.log_every_s:
            return
        self._logged[event.bucket] = now
        logger.info("%s: skipped a record: %s (further skips of this bucket are counted, logged at most every "
                    "%.0f s)", component, self.reason(event), self.log_every_s)
