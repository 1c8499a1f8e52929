"""The event log as the portal sees it: topics with sizes and rates, consumer lag, reading and re-sending
records. Only :class:`kawa.log.base.EventLog`'s public contract is used, so every backend works."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kawa.errors import TopicNotFound
from kawa.log.base import EventLog, PartitionLag, Record, TopicInfo, TopicPartition

READER_GROUP = "kawa.portal.reader"


def private_group(prefix: str) -> str:
    """A consumer group of this process alone (it never commits): two portals on one log must not split
    a topic's partitions between them."""
    return f"{prefix}.{socket.gethostname()}.{os.getpid()}"


@dataclass(frozen=True)
class TopicSample:
    time: float
    records: int  # sum of end offsets: every record ever written (a counter)


class RateTracker:
    """Per-topic write rates from samples of end offsets, over a sliding window."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[TopicSample]] = {}
        self._lock = threading.Lock()

    def add(self, topic: str, records: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            samples = self._samples.setdefault(topic, deque())
            samples.append(TopicSample(now, records))
            while len(samples) > 2 and samples[1].time <= now - self.window_s:
                samples.popleft()

    def rate(self, topic: str) -> float:
        """Records per second over the window (0 with fewer than two samples)."""
        with self._lock:
            samples = self._samples.get(topic)
            if not samples or len(samples) < 2:
                return 0.0
            first, last = samples[0], samples[-1]
        elapsed = last.time - first.time
        return max(0.0, (last.records - first.records) / elapsed) if elapsed > 0 else 0.0

    def forget(self, keep: Iterable[str]) -> None:
        wanted = set(keep)
        with self._lock:
            for topic in [t for t in self._samples if t not in wanted]:
                del self._samples[topic]


def total_records(info: TopicInfo) -> int:
    """Records currently held (end - start, summed over partitions)."""
    return sum(p.end_offset - p.start_offset for p in info.partitions)


def written_records(info: TopicInfo) -> int:
    """Records ever written (sum of end offsets): grows by one per record, whatever retention removed."""
    return sum(p.end_offset for p in info.partitions)


class LogSource:
    """Reads the log for the portal. Thread-safe."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.rates = RateTracker()
        self._reader_lock = threading.Lock()

    def topics(self) -> list[TopicInfo]:
        out = []
        for name in sorted(self.log.list_topics()):
            try:
                out.append(self.log.describe_topic(name))
            except TopicNotFound:  # deleted between list and describe
                continue
        return out

    def describe(self, name: str) -> TopicInfo:
        return self.log.describe_topic(name)

    def sample(self) -> list[TopicInfo]:
        """Describe every topic and record its size for the rate tracker."""
        infos = self.topics()
        now = time.monotonic()
        for info in infos:
            self.rates.add(info.name, written_records(info), now)
        self.rates.forget(info.name for info in infos)
        return infos

    def lag(self, group: str, topics: Sequence[str]) -> list[PartitionLag]:
        try:
            return self.log.lag(group, topics)
        except TopicNotFound:
            return []

    def read(
        self,
        topic: str,
        *,
        limit: int = 20,
        partition: int | None = None,
        offset: int | None = None,
        timeout_s: float = 5.0,
    ) -> list[Record]:
        """Up to ``limit`` records: from ``offset`` of ``partition`` when given, else the newest of each
        partition (newest first overall). Never commits; one read at a time (one private group member)."""
        info = self.log.describe_topic(topic)
        parts = [p for p in info.partitions if partition is None or p.partition == partition]
        if not parts:
            from kawa.errors import InvalidPartition

            raise InvalidPartition(
                f"topic {topic!r} has partitions 0..{info.partition_count - 1}; partition {partition} does not exist"
            )
        targets: dict[TopicPartition, tuple[int, int]] = {}
        for p in parts:
            if offset is not None:
                begin = min(max(offset, p.start_offset), p.end_offset)
                end = min(p.end_offset, begin + limit)
            else:
                begin, end = max(p.start_offset, p.end_offset - limit), p.end_offset
            if end > begin:
                targets[TopicPartition(topic, p.partition)] = (begin, end)
        if not targets:
            return []
        records: list[Record] = []
        with self._reader_lock:
            consumer = self.log.consumer(private_group(READER_GROUP), [topic], auto_offset_reset="latest")
            try:
                deadline = time.monotonic() + timeout_s
                while not set(targets) <= consumer.assignment() and time.monotonic() < deadline:
                    consumer.poll(timeout=0.05, max_records=1)
                for tp, (begin, _end) in targets.items():
                    if tp in consumer.assignment():
                        consumer.seek(tp, begin)
                pending = {tp for tp in targets if tp in consumer.assignment()}
                while pending and time.monotonic() < deadline:
                    for record in consumer.poll(timeout=0.1, max_records=max(limit, 50)):
                        tp = TopicPartition(record.topic, record.partition)
                        if tp in pending and record.offset < targets[tp][1]:
                            records.append(record)
                    for tp in list(pending):
                        if consumer.position(tp) >= targets[tp][1]:
                            pending.discard(tp)
            finally:
                consumer.close()
        if offset is not None:
            records.sort(key=lambda r: (r.partition, r.offset))
            return records[:limit]
        records.sort(key=lambda r: (r.timestamp_ms, r.offset), reverse=True)
        return records[:limit]

    def record(self, topic: str, partition: int, offset: int) -> Record:
        """The record at ``partition``/``offset`` (:class:`TopicNotFound` / :class:`OffsetOutOfRange`)."""
        for record in self.read(topic, limit=1, partition=partition, offset=offset):
            if record.offset == offset:
                return record
        from kawa.errors import OffsetOutOfRange

        raise OffsetOutOfRange(
            f"{topic}[{partition}] holds no record at offset {offset} (removed by retention or compaction, or "
            "never written); list records with GET /api/deadletters/{topic}/records"
        )
