"""Distinct events on a topic: follows it from its first held record and counts each CloudEvent id once.

A board's dead-letter counter counts dead letters, not deliveries: a dead letter that reached the
``.dlq`` topic twice (a redelivery after a crash between producing and committing) has one id and counts
once. A record that is not a CloudEvent counts once per position. Like the event tail (``events.py``), this is a
consumer in a private group that never commits; :meth:`poll` is called from one thread (the sampler).
"""

from __future__ import annotations

from kawa.errors import EventError, KawaError, TopicNotFound
from kawa.events import from_record
from kawa.log.base import Consumer, EventLog, Record


def event_key(record: Record) -> str:
    """The record's CloudEvent id, else its position (``topic/partition/offset``)."""
    try:
        return "id:" + str(from_record(record).get_id())
    except EventError:
        return f"at:{record.topic}/{record.partition}/{record.offset}"


class DistinctEvents:
    """How many distinct events ``topic`` has held since this tail started following it."""

    def __init__(self, log: EventLog, topic: str, group: str) -> None:
        self.log, self.topic, self.group = log, topic, group
        self._seen: set[str] = set()
        self._consumer: Consumer | None = None
        self.records_read = 0  # deliveries read, duplicates included
        self.error: str | None = None

    @property
    def count(self) -> int:
        return len(self._seen)

    def poll(self, max_records: int = 2000) -> None:
        """Read what arrived since the last call (non-blocking)."""
        if self._consumer is None and not self._attach():
            return
        assert self._consumer is not None
        try:
            for _ in range(20):  # bounded per tick, like the results tail
                batch = self._consumer.poll(timeout=0.0, max_records=max_records)
                self._seen.update(event_key(r) for r in batch)
                self.records_read += len(batch)
                if len(batch) < max_records:
                    break
        except KawaError as exc:
            self.error = str(exc)
            self.close()

    def _attach(self) -> bool:
        import time

        try:
            self.log.describe_topic(self.topic)
        except TopicNotFound:
            return False
        consumer = self.log.consumer(self.group, [self.topic], auto_offset_reset="earliest")
        deadline = time.monotonic() + 5.0
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout=0.05, max_records=1)
        consumer.seek_to_beginning()
        self._consumer, self.error = consumer, None
        return True

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None
