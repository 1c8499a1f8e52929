"""An in-memory event log: the same contract as the embedded and Kafka logs, for users' tests.

Everything lives in one process and vanishes with it. Thread-safe. ``maintain()`` applies retention and
compaction at once (the other backends do that in the background).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kawa.errors import InvalidPartition, ProducerError, TopicExists, TopicNotFound
from kawa.log.base import (
    DEFAULT_MAX_RECORD_BYTES,
    DeliveryCallback,
    Headers,
    OffsetReset,
    PartitionInfo,
    PartitionLag,
    Record,
    RecordMetadata,
    SendMixin,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    check_record_size,
    now_ms,
)
from kawa.log.groups import (
    GroupConsumer,
    GroupState,
    Membership,
    apply_heartbeat,
    check_commit,
    compute_lag,
    rebalance,
)
from kawa.log.partitioner import NullKeySpreader, partition_for_key
from kawa.log.retention import compact_records, record_size

__all__ = ["MemoryLog", "build"]


@dataclass
class _Partition:
    records: list[Record] = field(default_factory=list)
    next_offset: int = 0

    @property
    def start(self) -> int:
        return self.records[0].offset if self.records else self.next_offset


@dataclass
class _Topic:
    spec: TopicSpec
    partitions: list[_Partition]


class MemoryLog:
    """The in-memory :class:`~kawa.log.base.EventLog` (scheme ``memory:``)."""

    def __init__(self, uri: str = "memory:", *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.uri = uri
        self.max_record_bytes = max_record_bytes
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, GroupState] = {}
        self._cond = threading.Condition()

    # --- topics -----------------------------------------------------------------------------------

    def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        with self._cond:
            if spec.name in self._topics:
                if exist_ok:
                    return
                raise TopicExists(f"topic {spec.name!r} already exists")
            self._topics[spec.name] = _Topic(spec, [_Partition() for _ in range(spec.partitions)])

    def list_topics(self) -> list[str]:
        with self._cond:
            return sorted(self._topics)

    def _topic(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise TopicNotFound(f"topic {name!r} does not exist; create it with `kawa topics create {name}`") from None

    def describe_topic(self, name: str) -> TopicInfo:
        with self._cond:
            topic = self._topic(name)
            spec = topic.spec
            parts = tuple(PartitionInfo(i, p.start, p.next_offset) for i, p in enumerate(topic.partitions))
        return TopicInfo(name, parts, spec.retention_ms, spec.retention_bytes, spec.cleanup_policy)

    def delete_topic(self, name: str) -> None:
        with self._cond:
            self._topic(name)
            del self._topics[name]
            self._cond.notify_all()

    # --- produce ----------------------------------------------------------------------------------

    def producer(self, *, max_record_bytes: int | None = None) -> MemoryProducer:
        return MemoryProducer(self, max_record_bytes or self.max_record_bytes)

    def _append(self, tp: TopicPartition, record: Record) -> RecordMetadata:
        with self._cond:
            partition = self._topic(tp.topic).partitions[tp.partition]
            stored = Record(
                tp.topic,
                tp.partition,
                partition.next_offset,
                record.key,
                record.value,
                record.headers,
                record.timestamp_ms,
            )
            partition.records.append(stored)
            partition.next_offset += 1
            self._cond.notify_all()
            return RecordMetadata(tp.topic, tp.partition, stored.offset, stored.timestamp_ms)

    # --- consume ----------------------------------------------------------------------------------

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: OffsetReset = "earliest",
        session_timeout_ms: int | None = None,
        client_id: str | None = None,
    ) -> GroupConsumer:
        return GroupConsumer(
            group,
            topics,
            _MemoryCoordinator(self),
            _MemorySource(self),
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=session_timeout_ms,
            client_id=client_id,
        )

    def lag(self, group: str, topics: Sequence[str] | None = None) -> list[PartitionLag]:
        coordinator = _MemoryCoordinator(self)
        return compute_lag(
            coordinator.committed(group), coordinator.subscribed_topics(group), _MemorySource(self), topics
        )

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        source = _MemorySource(self)
        return {
            p: source.offset_for_time(TopicPartition(topic, p), timestamp_ms)
            for p in range(source.partitions_of(topic))
        }

    # --- maintenance ------------------------------------------------------------------------------

    def maintain(self, now: int | None = None) -> None:
        """Apply retention (time, bytes) and compaction to every topic now."""
        now = now_ms() if now is None else now
        with self._cond:
            for topic in self._topics.values():
                spec = topic.spec
                for partition in topic.partitions:
                    records = partition.records
                    if "compact" in spec.cleanup_policy:
                        records = compact_records(records, now)
                    if "delete" in spec.cleanup_policy:
                        if spec.retention_ms is not None:
                            records = [r for r in records if now - r.timestamp_ms <= spec.retention_ms]
                        if spec.retention_bytes is not None:
                            total = sum(record_size(r) for r in records)
                            while records and total > spec.retention_bytes:
                                total -= record_size(records[0])
                                records = records[1:]
                    partition.records = records

    def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""


class MemoryProducer(SendMixin):
    def __init__(self, log: MemoryLog, max_record_bytes: int) -> None:
        self._log = log
        self._max = max_record_bytes
        self._spread = NullKeySpreader()

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        with self._log._cond:
            spec = self._log._topic(topic).spec
        count = spec.partitions
        if key is None and "compact" in spec.cleanup_policy:
            raise ProducerError(f"topic {topic!r} is compacted: every record needs a key")
        check_record_size(topic, key, value, headers, self._max)
        if partition is None:
            partition = partition_for_key(key, count) if key is not None else self._spread.next(count)
        elif not 0 <= partition < count:
            raise InvalidPartition(f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
        record = Record(topic, partition, -1, key, value, tuple(headers), timestamp_ms or now_ms())
        metadata = self._log._append(TopicPartition(topic, partition), record)
        if on_delivery is not None:
            on_delivery(metadata, None)

    def flush(self, timeout: float | None = None) -> None:
        """Records are stored when produced; nothing is pending."""

    def close(self, timeout: float | None = None) -> None:
        pass


class _MemorySource:
    def __init__(self, log: MemoryLog) -> None:
        self._log = log

    def partitions_of(self, topic: str) -> int:
        with self._log._cond:
            return len(self._log._topic(topic).partitions)

    def _partition(self, tp: TopicPartition) -> _Partition:
        partitions = self._log._topic(tp.topic).partitions
        if not 0 <= tp.partition < len(partitions):
            raise InvalidPartition(f"{tp.topic} has partitions 0..{len(partitions) - 1}, not {tp.partition}")
        return partitions[tp.partition]

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        with self._log._cond:
            p = self._partition(tp)
            return p.start, p.next_offset

    def read(self, tp: TopicPartition, offset: int, max_records: int) -> list[Record]:
        with self._log._cond:
            records = self._partition(tp).records
            lo, hi = 0, len(records)
            while lo < hi:
                mid = (lo + hi) // 2
                if records[mid].offset < offset:
                    lo = mid + 1
                else:
                    hi = mid
            return records[lo : lo + max_records]

    def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        with self._log._cond:
            p = self._partition(tp)
            for record in p.records:
                if record.timestamp_ms >= timestamp_ms:
                    return record.offset
            return p.next_offset

    def wait(
        self, partitions: Iterable[TopicPartition], positions: Mapping[TopicPartition, int], timeout: float
    ) -> None:
        with self._log._cond:
            for tp in partitions:
                topic = self._log._topics.get(tp.topic)
                if topic and topic.partitions[tp.partition].next_offset > positions.get(tp, 0):
                    return
            self._log._cond.wait(timeout)


class _MemoryCoordinator:
    def __init__(self, log: MemoryLog) -> None:
        self._log = log

    def _state(self, group: str) -> GroupState:
        return self._log._groups.setdefault(group, GroupState())

    def _partitions_of(self, topic: str) -> int:
        return len(self._log._topic(topic).partitions)

    def heartbeat(
        self, group: str, member_id: str, topics: Sequence[str], session_timeout_ms: int, client_id: str
    ) -> Membership:
        with self._log._cond:
            state = self._state(group)
            apply_heartbeat(state, member_id, topics, session_timeout_ms, client_id, self._partitions_of, now_ms())
            return Membership(state.generation, frozenset(state.assignment.get(member_id, ())))

    def leave(self, group: str, member_id: str) -> None:
        with self._log._cond:
            state = self._state(group)
            if state.members.pop(member_id, None) is not None:
                rebalance(state, self._partitions_of)

    def commit(self, group: str, member_id: str, generation: int, offsets: Mapping[TopicPartition, int]) -> None:
        with self._log._cond:
            state = self._state(group)
            check_commit(state, member_id, generation, offsets)
            state.offsets.update(offsets)

    def committed(self, group: str) -> dict[TopicPartition, int]:
        with self._log._cond:
            return dict(self._state(group).offsets)

    def subscribed_topics(self, group: str) -> set[str]:
        with self._log._cond:
            return {t for m in self._state(group).members.values() for t in m.topics}


def build(uri: str, *, config: Any = None, **_: Any) -> MemoryLog:
    max_bytes = config.log.max_record_bytes if config is not None else DEFAULT_MAX_RECORD_BYTES
    return MemoryLog(uri, max_record_bytes=max_bytes)
