"""The event log contract, the same for every backend.

Guarantees every backend gives (tested once, in ``tests/log/test_contract.py``, over every backend):

- **Ordering** per partition: records are read in the order their produce calls were acknowledged.
- **Offsets** within a partition are increasing integers starting at 0. Without compaction they are dense;
  compaction leaves gaps but never reorders.
- **Delivery** is at-least-once: a record is acknowledged (its ``on_delivery`` called with metadata, or
  ``flush`` returned) only when it is stored; a consumer sees every stored record of its partitions at
  least once as long as it commits only what it processed.
- **Commit**: a committed offset is the *next* record to read (last processed + 1). A member whose
  partition moved to another member in a rebalance cannot commit it (:class:`CommitFailed`).
- **Keys → partitions** as Java Kafka clients place them: ``murmur2(key) & 0x7fffffff % partitions``; a
  null key spreads records over partitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from kawa.errors import InvalidTopicSpec, ProducerError, RecordTooLarge

CleanupPolicy = Literal["delete", "compact", "compact,delete"]
OffsetReset = Literal["earliest", "latest"]
Headers = Sequence[tuple[str, bytes]]

DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_TOPIC_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class TopicSpec:
    """What a topic is created with. ``retention_ms``/``retention_bytes`` of ``None`` mean unlimited."""

    name: str
    partitions: int = 1
    retention_ms: int | None = DEFAULT_RETENTION_MS
    retention_bytes: int | None = None
    cleanup_policy: CleanupPolicy = "delete"

    def __post_init__(self) -> None:
        validate_topic_name(self.name)
        if not isinstance(self.partitions, int) or self.partitions < 1:
            raise InvalidTopicSpec(
                f"topic {self.name!r}: partitions must be a positive integer, got {self.partitions!r}"
            )
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise InvalidTopicSpec(f"topic {self.name!r}: retention_ms must be positive or None (unlimited)")
        if self.retention_bytes is not None and self.retention_bytes <= 0:
            raise InvalidTopicSpec(f"topic {self.name!r}: retention_bytes must be positive or None (unlimited)")
        if self.cleanup_policy not in ("delete", "compact", "compact,delete"):
            raise InvalidTopicSpec(
                f"topic {self.name!r}: cleanup_policy must be delete, compact or 'compact,delete', "
                f"got {self.cleanup_policy!r}"
            )


def validate_topic_name(name: str) -> None:
    """Kafka's topic name rules: 1-249 of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``."""
    if not name or len(name) > 249 or name in (".", "..") or not set(name) <= _TOPIC_CHARS:
        raise InvalidTopicSpec(
            f"invalid topic name {name!r}: use 1-249 characters of letters, digits, '.', '_' and '-'"
        )


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    start_offset: int  # the first offset still held (log start)
    end_offset: int  # the offset the next record will get (high watermark)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: tuple[PartitionInfo, ...]
    retention_ms: int | None
    retention_bytes: int | None
    cleanup_policy: CleanupPolicy

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


@dataclass(frozen=True)
class Record:
    """One record as read from the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        """The first header named ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class RecordMetadata:
    """Where an acknowledged record was stored."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end_offset: int
    lag: int  # end_offset - committed (or - start_offset when nothing is committed)


DeliveryCallback = Callable[[RecordMetadata | None, Exception | None], None]


class Producer(Protocol):
    """Writes records. Thread-safe. Records may be batched until :meth:`flush`."""

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
        """Queue one record (``timestamp_ms`` None or 0: now).

        Raises at once for an unknown topic, a bad partition or an oversize record;
        ``on_delivery`` is called with the stored record's metadata (or the error) once it is acknowledged."""
        ...

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged; raise :class:`ProducerError` otherwise."""
        ...

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Produce one record and wait for its acknowledgement."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most ``timeout`` seconds; None: the backend's default) and release resources. Records not
        acknowledged by then are reported in the error raised (:class:`ProducerError`)."""
        ...


class Consumer(Protocol):
    """A member of a consumer group. Not thread-safe: use it from one thread.

    Partitions of the subscribed topics are divided among the group's live members; a member that stops
    heartbeating (``session_timeout_ms``) is removed and its partitions move. A newly assigned partition
    starts at the group's committed offset, else at ``auto_offset_reset``.
    """

    group: str

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        """Up to ``max_records`` records of the assigned partitions, waiting at most ``timeout`` seconds."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (next offset to read per partition), or the current positions when None.
        Synchronous: when it returns the commit is durable in the backend."""
        ...

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record :meth:`poll` returns for ``tp``."""
        ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next. An offset outside the partition's [start, end] is reset by
        ``auto_offset_reset`` (earliest → start, latest → end), as Kafka does."""
        ...

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None: ...

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None: ...

    def seek_to_time(self, timestamp_ms: int, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Move to the earliest offset whose timestamp is >= ``timestamp_ms`` (the end when none is)."""
        ...

    def close(self) -> None:
        """Leave the group (its partitions move to the others at once)."""
        ...


@runtime_checkable
class EventLog(Protocol):
    """A partitioned, replayable log of records: topics, producers, consumer groups."""

    uri: str

    def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None: ...

    def list_topics(self) -> list[str]: ...

    def describe_topic(self, name: str) -> TopicInfo:
        """Raises :class:`TopicNotFound`."""
        ...

    def delete_topic(self, name: str) -> None:
        """Raises :class:`TopicNotFound`."""
        ...

    def producer(self, *, max_record_bytes: int | None = None) -> Producer: ...

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: OffsetReset = "earliest",
        session_timeout_ms: int | None = None,
        client_id: str | None = None,
    ) -> Consumer:
        """Join ``group`` subscribed to ``topics`` (each must exist: :class:`TopicNotFound`)."""
        ...

    def lag(self, group: str, topics: Sequence[str] | None = None) -> list[PartitionLag]:
        """Committed offset, end offset and lag per partition the group has committed or subscribes to."""
        ...

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the earliest offset with timestamp >= ``timestamp_ms`` (end offset if none)."""
        ...

    def close(self) -> None: ...


@dataclass
class _Pending:
    metadata: RecordMetadata | None = None
    error: Exception | None = None
    done: bool = False
    callbacks: list[DeliveryCallback] = field(default_factory=list)


class SendMixin:
    """``send`` in terms of ``produce`` + ``flush`` for producers."""

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        box = _Pending()

        def done(metadata: RecordMetadata | None, error: Exception | None) -> None:
            box.metadata, box.error, box.done = metadata, error, True

        self.produce(  # type: ignore[attr-defined]
            topic,
            value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp_ms=timestamp_ms,
            on_delivery=done,
        )
        self.flush()  # type: ignore[attr-defined]
        if box.error is not None:
            raise box.error
        if box.metadata is None:
            raise ProducerError(f"record to {topic!r} was not acknowledged")
        return box.metadata


def check_record_size(topic: str, key: bytes | None, value: bytes | None, headers: Headers, limit: int) -> int:
    """The record's size (key + value + header names and values, in bytes); :class:`RecordTooLarge` above
    ``limit``. Every producer applies it before queueing, so the limit means the same on every backend."""
    size = (len(value) if value else 0) + (len(key) if key else 0)
    if headers:
        size += sum(len(k.encode()) + len(v or b"") for k, v in headers)
    if size > limit:
        raise RecordTooLarge(
            f"record for {topic!r} is {size} bytes (key + value + headers), above the limit of {limit} bytes; "
            "store large payloads in the object store and send a reference, or raise log.max_record_bytes"
        )
    return size


def now_ms() -> int:
    return time.time_ns() // 1_000_000
