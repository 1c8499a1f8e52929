"""The audit trail: append-only audit records on the log (``kawa.audit``), and the reader behind ``kawa audit``.

Every record is written as a ``kawa.audit.v1`` CloudEvent (binary mode, keyed by user) and the writer waits for
the log's acknowledgement before it returns, so a request the portal answered has its record on the log. A
record holds names, statuses and times only — never request or response content, so no PHI.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from kawa.audit.record import AUDIT_TOPIC, AUDIT_TYPE, AuditRecord

if TYPE_CHECKING:
    from kawa.log.base import EventLog, Producer

__all__ = ["AuditFilter", "AuditTrail", "read_audit"]


class AuditTrail:
    """Writes audit records to ``topic`` of ``log`` (created on first use). Thread-safe."""

    def __init__(self, log: EventLog, topic: str = AUDIT_TOPIC, *, timeout_s: float = 30.0) -> None:
        self.log, self.topic, self.timeout_s = log, topic, timeout_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def _open(self) -> Producer:
        with self._lock:
            if self._producer is None:
                from kawa.log.base import TopicSpec

                self.log.create_topic(TopicSpec(self.topic), exist_ok=True)
                self._producer = self.log.producer()
            return self._producer

    def append(self, record: AuditRecord) -> None:
        """Write ``record`` and wait until the log has acknowledged it."""
        from kawa.events import to_kafka

        _key, value, headers = to_kafka(record.to_event())
        self._open().send(self.topic, value, key=record.user.encode("utf-8"), headers=headers)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(self.timeout_s)
                self._producer = None


@dataclass(frozen=True)
class AuditFilter:
    """Which records to read: all of them by default; ``limit`` keeps the newest."""

    user: str | None = None
    action: str | None = None
    project: str | None = None
    result: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    limit: int | None = None

    def matches(self, record: AuditRecord) -> bool:
        return (
            (self.user is None or record.user == self.user)
            and (self.action is None or record.action == self.action)
            and (self.project is None or record.project == self.project)
            and (self.result is None or record.result == self.result)
            and (self.request_id is None or record.request_id == self.request_id)
            and (self.since is None or record.time >= self.since)
        )


def _records(log: EventLog, topic: str) -> Iterator[AuditRecord]:
    from kawa.errors import TopicNotFound
    from kawa.evaluation.experiments import read_to_end
    from kawa.events import from_record

    try:
        log.describe_topic(topic)
    except TopicNotFound:
        return
    for raw in read_to_end(log, topic):
        event = from_record(raw)
        if event.get_type() == AUDIT_TYPE:
            yield AuditRecord.from_event(event)


def read_audit(log: EventLog, where: AuditFilter = AuditFilter(), topic: str = AUDIT_TOPIC) -> list[AuditRecord]:
    """The audit records of ``topic`` that match ``where``, oldest first (an empty list when nothing was audited)."""
    found = [r for r in _records(log, topic) if where.matches(r)]
    found.sort(key=lambda r: r.time)
    return found[-where.limit :] if where.limit else found


def count_by_request(records: Iterable[AuditRecord]) -> dict[str, int]:
    """Records per request id (each audited request has exactly one)."""
    out: dict[str, int] = {}
    for record in records:
        out[record.request_id] = out.get(record.request_id, 0) + 1
    return out
