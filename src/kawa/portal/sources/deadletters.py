"""Dead letters: which topics hold them, what each record says went wrong, and re-driving a record to the
topic it came from.

A dead-letter record is the original record (key, value, headers) plus the reason, in the one schema
functions and routes write (:mod:`kawa.deadletter`: ``kawa-dlq-*`` headers / ``ce_kawadlq*`` extensions;
older records' version-1 headers are read too).
Re-driving sends the original event back to its source topic under a **new id** (the old id is kept in
the ``kawaredriveof`` extension): a dead-lettered id is remembered by the function's dedupe store, so the
same id would be skipped as already handled.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kawa.deadletter import DeadLetterReason, is_reason_header, read_reason
from kawa.errors import EventError, KawaError, TopicNotFound
from kawa.events import from_record, to_kafka
from kawa.log.base import Record, RecordMetadata
from kawa.portal.apps import installed_apps
from kawa.portal.sources.log import total_records

if TYPE_CHECKING:
    from kawa.portal.runtime import Portal

DLQ_SUFFIXES = (".dlq", ".deadletter", "-dlq")
REDRIVE_EXTENSION = "kawaredriveof"


def _printable(data: bytes, content_type: str | None) -> Any:
    if (content_type and not content_type.startswith(("text/", "application/json"))) or b"\x00" in data[:512]:
        return f"<{len(data)} bytes of {content_type or 'binary data'}>"
    return data.decode("utf-8", "replace")[:4000]


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    time_ms: int
    error_type: str | None  # the reason code (``undecodable``, ``handler-error``…)
    error_message: str | None
    attempts: int | None
    function: str | None  # the function's qualified name, or ``route <id>``
    event_id: str | None
    event_type: str | None
    event_source: str | None
    event_subject: str | None
    data: Any  # the original event's data (PHI-bearing: shown to phi.read only)
    reason: DeadLetterReason | None = None

    def summary(self) -> dict[str, Any]:
        """The PHI-free part: where, when, why."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "time": self.time_ms / 1000.0 if self.time_ms else None,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "function": self.function,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "reason": None if self.reason is None else self.reason.describe(),
        }


def describe_dead_letter(record: Record) -> DeadLetter:
    why = read_reason(record.headers)
    event_id = event_type = event_source = subject = None
    data: Any = None
    try:
        event = from_record(record)
        event_id, event_type = str(event.get_id()), str(event.get_type())
        event_source = str(event.get_source())
        subject = event.get_subject()
        data = event.get_data()
        if isinstance(data, bytes):
            try:
                data = json.loads(data)
            except ValueError:
                data = _printable(data, event.get_datacontenttype())
    except EventError:
        data = _printable(record.value or b"", None)
    component = None
    if why is not None and why.component:
        component = f"route {why.component}" if why.kind == "route" else why.component
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        time_ms=record.timestamp_ms,
        error_type=None if why is None else why.error_type or why.reason,
        error_message=None if why is None else why.message,
        attempts=None if why is None or not why.attempts else why.attempts,
        function=component,
        event_id=event_id,
        event_type=event_type,
        event_source=event_source,
        event_subject=None if subject is None else str(subject),
        data=data,
        reason=why,
    )


@dataclass(frozen=True)
class DeadLetterTopic:
    topic: str
    source_topic: str | None
    records: int
    owners: tuple[str, ...]  # functions / routes that dead-letter here


class DeadLettersSource:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    def _declared(self) -> dict[str, tuple[str | None, list[str]]]:
        """Dead-letter topic → (source topic, owners) from the running functions and routes."""
        out: dict[str, tuple[str | None, list[str]]] = {}
        for spec in self.portal.functions.specs():
            if spec.dead_letter_topic:
                source, owners = out.get(spec.dead_letter_topic, (spec.topic, []))
                out[spec.dead_letter_topic] = (source or spec.topic, [*owners, spec.qualified_name])
        try:
            routes = self.portal.routes.routes()
        except KawaError:
            routes = []
        for route in routes:
            if route.dead_letter and route.dead_letter.startswith("topic:"):
                topic = route.dead_letter[len("topic:") :].split("?")[0]
                source = route.source[len("topic:") :].split("?")[0] if route.source.startswith("topic:") else None
                previous, owners = out.get(topic, (source, []))
                out[topic] = (previous or source, [*owners, f"route {route.id}"])
        for app in installed_apps(self.portal.platform):
            for topic in app.board.dead_letter_topics if app.board is not None else ():
                out.setdefault(topic, (None, [f"app {app.name}"]))
        return out

    def topics(self) -> list[DeadLetterTopic]:
        declared = self._declared()
        existing = set(self.portal.log.log.list_topics())
        names = {t for t in existing if t.endswith(DLQ_SUFFIXES)} | (set(declared) & existing)
        out = []
        for name in sorted(names):
            try:
                info = self.portal.log.describe(name)
            except TopicNotFound:
                continue
            source, owners = declared.get(name, (None, []))
            if source is None:
                source = self._guess_source(name, existing)
            out.append(DeadLetterTopic(name, source, total_records(info), tuple(owners)))
        return out

    @staticmethod
    def _guess_source(topic: str, existing: set[str]) -> str | None:
        for suffix in DLQ_SUFFIXES:
            if topic.endswith(suffix) and topic[: -len(suffix)] in existing:
                return topic[: -len(suffix)]
        return None

    def source_of(self, topic: str, record: Record | None = None) -> str | None:
        if record is not None and (why := read_reason(record.headers)) is not None and why.source_topic:
            return why.source_topic
        for entry in self.topics():
            if entry.topic == topic:
                return entry.source_topic
        return None

    def is_dead_letter_topic(self, topic: str) -> bool:
        return any(entry.topic == topic for entry in self.topics())

    def records(self, topic: str, limit: int = 50) -> list[DeadLetter]:
        return [describe_dead_letter(r) for r in self.portal.log.read(topic, limit=limit)]

    def redrive(self, topic: str, partition: int, offset: int, target: str | None = None) -> RecordMetadata:
        """Send the dead letter at ``partition``/``offset`` back to its source topic (or ``target``)."""
        record = self.portal.log.record(topic, partition, offset)
        destination = target or self.source_of(topic, record)
        if destination is None:
            raise KawaError(
                f"cannot tell which topic the dead letters of {topic!r} came from; pass the target topic "
                'explicitly ({"target": "TOPIC"})'
            )
        self.portal.log.describe(destination)  # TopicNotFound when it is gone
        headers = [(k, v) for k, v in record.headers if not is_reason_header(k)]
        key, value = record.key, record.value
        try:
            event = from_record(record)
        except EventError:
            event = None  # not a CloudEvent (it was dead-lettered as undecodable): send it back unchanged
        if event is not None:
            from kawa.events import CloudEvent

            attributes = {k: v for k, v in event.get_attributes().items() if not is_reason_header(k)}
            attributes[REDRIVE_EXTENSION] = str(event.get_id())
            attributes["id"] = str(uuid.uuid4())
            _key, value, headers = to_kafka(CloudEvent(attributes, event.get_data()))
        producer = self.portal.log.log.producer()
        try:
            return producer.send(destination, value, key=key, headers=headers)
        finally:
            producer.close()
