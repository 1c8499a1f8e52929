"""The Kafka consumer-group member of the event log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import (
    KafkaError,
    KafkaException,
)
from confluent_kafka import TopicPartition as _RdTopicPartition

from kawa.errors import (
    CommitFailed,
    InvalidPartition,
    KawaError,
    LogError,
)
from kawa.log.base import (
    OffsetReset,
    Record,
    TopicPartition,
)

if TYPE_CHECKING:
    from kawa.log.kafka.log import KafkaLog

import kawa.log.kafka.forks as forks
from kawa.log.kafka.common import _headers, _names

log = logging.getLogger("kawa.log.kafka")


class KafkaConsumer:
    """A :class:`~kawa.log.base.Consumer`: one member of a Kafka consumer group.

    Positions are tracked here (the next offset per assigned partition) so that :meth:`position`,
    :meth:`commit` and :meth:`seek` mean the same as on the other backends, whatever librdkafka has
    prefetched.
    """

    def __init__(
        self,
        log: KafkaLog,
        group: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: OffsetReset,
        session_timeout_ms: int,
        client_id: str | None,
    ) -> None:
        if not topics:
            raise ValueError("subscribe to at least one topic")
        for topic in topics:
            log.partition_count(topic)
        self._log = log
        self._name = log.health.client_name(f"consumer of group {group!r}")
        # One call into librdkafka at a time: close() waits for a poll in flight on another thread instead
        # of destroying the handle under it. Re-entrant: the rebalance callbacks run inside poll().
        self._lock = threading.RLock()
        self.group = group
        self.topics = tuple(topics)
        self._reset = auto_offset_reset
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        # Seeks on partitions of the subscription that are not assigned yet: applied on assignment.
        self._pending: dict[TopicPartition, int | str] = {}
        overrides: dict[str, Any] = {
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": auto_offset_reset,
            "session.timeout.ms": session_timeout_ms,
            # Members learn of a rebalance with their next heartbeat: keep it well under the session.
            "heartbeat.interval.ms": max(100, min(1000, session_timeout_ms // 10)),
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": False,
            # A seek waits for the fetch in flight; an idle fetch is held by the broker this long (default 500).
            "fetch.wait.max.ms": 100,
            # Refers to the cluster's health only, not to this object (see kafka/quiet.py).
            "error_cb": log.health.error_callback(self._name),
        }
        if client_id:
            overrides["client.id"] = client_id
        conf = log.client_conf(**overrides)
        # A user may configure an eager strategy (range, roundrobin) in log.kafka.extra.
        self._cooperative = conf["partition.assignment.strategy"] == "cooperative-sticky"
        self._consumer = _RdConsumer(conf)
        self._consumer.subscribe(
            list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self._closed = False
        self._was_forked = False
        forks.track(self)

    def _forked(self) -> None:
        self._was_forked = self._closed = True
        self._lock = threading.RLock()  # another thread may have held it at the fork
        forks.keep_forever(self._consumer)

    # librdkafka calls these from poll(); with cooperative-sticky they carry the partitions that change.
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        start = []
        for tp in partitions:
            key = TopicPartition(tp.topic, tp.partition)
            self._assigned.add(key)
            self._positions.pop(key, None)
            offset = self._resolve_pending(key)
            if offset is not None:
                self._positions[key] = offset
                start.append(_RdTopicPartition(tp.topic, tp.partition, offset))
            else:
                start.append(tp)  # librdkafka starts at the committed offset, else auto.offset.reset
        self._log.health.reachable()
        if self._cooperative:
            consumer.incremental_assign(start)
        else:
            consumer.assign(start)

    def _resolve_pending(self, tp: TopicPartition) -> int | None:
        target = self._pending.pop(tp, None)
        if target is None or isinstance(target, int):
            return target
        try:
            low, high = self._watermarks(tp)
        except KawaError:
            log.warning("cannot resolve seek of %s[%d] to %s; using the committed offset", *tp, target)
            return None
        return low if target == "beginning" else high

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            key = TopicPartition(tp.topic, tp.partition)
            self._assigned.discard(key)
            self._positions.pop(key, None)

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        with self._lock:
            self._check_open()
            try:
                # consume(n, timeout) waits for all n records; take what is buffered, else wait for one.
                messages: list[Any] = self._consumer.consume(max_records, 0)  # Any: delivered: all fields set
                if not messages:
                    first = self._consumer.poll(timeout)
                    if first is not None:
                        messages = [first, *self._consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
            except KafkaException as exc:
                self._log._raise(exc, f"polling group {self.group!r}")
        records: list[Record] = []
        assigned, positions = self._assigned, self._positions
        tp, wanted = TopicPartition("", -1), False
        for message in messages:  # the hot loop of consuming: kept lean
            error = message.error()
            if error is not None:
                if error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    self._log._raise(KafkaException(error), f"polling group {self.group!r}", message.topic())
                self._log.health.on_error(self._name, error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if partition != tp.partition or topic != tp.topic:  # records come in runs per partition
                tp = TopicPartition(topic, partition)
                wanted = tp in assigned  # not: a late record of a partition revoked in this very poll
            if not wanted:
                continue
            positions[tp] = offset + 1
            headers = message.headers()
            records.append(
                Record(
                    topic,
                    partition,
                    offset,
                    message.key(),
                    message.value(),
                    _headers(headers) if headers else (),
                    message.timestamp()[1],
                )
            )
        if records:
            self._log.health.reachable()
        return records

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._check_open()
        if offsets is None:
            offsets = {tp: self._positions[tp] for tp in self._assigned if tp in self._positions}
        else:
            offsets = {TopicPartition(*tp): offset for tp, offset in offsets.items()}
            moved = sorted(set(offsets) - self._assigned)
            if moved:
                raise CommitFailed(
                    f"cannot commit {_names(moved)} for group {self.group!r}: not assigned to this member "
                    "(the group rebalanced); the new owner resumes from the last commit"
                )
        if not offsets:
            return
        request = [_RdTopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            with self._lock:
                self._check_open()
                result = self._consumer.commit(offsets=request, asynchronous=False)
        except KafkaException as exc:
            self._log._raise(exc, f"committing offsets of group {self.group!r}")
        for tp in result or []:
            if tp.error is not None:
                self._log._raise(KafkaException(tp.error), f"committing {tp.topic}[{tp.partition}]", tp.topic)

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        keys = [TopicPartition(*tp) for tp in partitions]
        if not keys:
            return {}
        try:
            with self._lock:
                self._check_open()
                result = self._consumer.committed(
                    [_RdTopicPartition(tp.topic, tp.partition) for tp in keys], timeout=self._log.timeout_s
                )
        except KafkaException as exc:
            self._log._raise(exc, f"reading committed offsets of group {self.group!r}")
        return {TopicPartition(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in result}

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def position(self, tp: TopicPartition) -> int:
        tp = TopicPartition(*tp)
        if tp not in self._assigned:
            raise InvalidPartition(
                f"{tp.topic}[{tp.partition}] is not assigned to this member of group {self.group!r} "
                f"(assigned: {_names(sorted(self._assigned)) or 'nothing yet'}); poll until the group assigns it"
            )
        if tp not in self._positions:
            # Nothing consumed or sought yet: where the group resumes (committed, else the reset policy),
            # pinned with a seek so that the next poll starts exactly there.
            committed = self.committed([tp])[tp]
            self._seek(
                tp, committed if committed is not None else ("beginning" if self._reset == "earliest" else "end")
            )
        return self._positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move to ``offset``; on a partition of the subscription that is not assigned yet, the seek
        applies when it is."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._seek(self._targets([tp])[0], offset)

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for tp in self._targets(partitions):
            self._seek(tp, "beginning")

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for tp in self._targets(partitions):
            self._seek(tp, "end")

    def seek_to_time(self, timestamp_ms: int, partitions: Iterable[TopicPartition] | None = None) -> None:
        targets = self._targets(partitions)
        for topic in sorted({tp.topic for tp in targets}):
            offsets = self._log.offsets_for_time(topic, timestamp_ms)
            for tp in targets:
                if tp.topic == topic:
                    self._seek(tp, offsets[tp.partition])

    def _seek(self, tp: TopicPartition, target: int | str) -> None:
        self._check_open()
        if tp not in self._assigned:
            self._pending[tp] = target
            return
        if isinstance(target, str):
            low, high = self._watermarks(tp)
            target = low if target == "beginning" else high
        request = _RdTopicPartition(tp.topic, tp.partition, target)
        deadline = time.monotonic() + self._log.timeout_s
        while True:
            try:
                with self._lock:
                    self._check_open()
                    self._consumer.seek(request)
                break
            except KafkaException as exc:
                # _STATE: librdkafka has not activated a fresh assignment yet; it does so shortly.
                if exc.args[0].code() != KafkaError._STATE or time.monotonic() > deadline:
                    self._log._raise(exc, f"seeking {tp.topic}[{tp.partition}] to {target}", tp.topic)
                time.sleep(0.02)
        self._positions[tp] = target

    def __enter__(self) -> KafkaConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _targets(self, partitions: Iterable[TopicPartition] | None) -> list[TopicPartition]:
        if partitions is None:
            return sorted(self._assigned)
        keys = [TopicPartition(*tp) for tp in partitions]
        for tp in keys:
            if tp in self._assigned:
                continue
            if tp.topic not in self.topics:
                raise InvalidPartition(
                    f"{tp.topic}[{tp.partition}]: this consumer of group {self.group!r} subscribes to "
                    f"{', '.join(self.topics)}, not {tp.topic!r}"
                )
            count = self._log.partition_count(tp.topic)
            if not 0 <= tp.partition < count:
                raise InvalidPartition(f"topic {tp.topic!r} has partitions 0..{count - 1}, not {tp.partition}")
        return keys

    def close(self) -> None:
        """Leave the group; waits for a poll in flight on another thread (at most its timeout)."""
        if self._was_forked:
            return  # leaving the group is the parent's business
        with self._lock:
            if not self._closed:
                self._closed = True
                self._assigned.clear()
                self._consumer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(
                f"this consumer {forks.FORKED}" if self._was_forked else "this consumer is closed; create a new one"
            )

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            with self._lock:
                self._check_open()
                low, high = self._consumer.get_watermark_offsets(
                    _RdTopicPartition(tp.topic, tp.partition), timeout=self._log.timeout_s, cached=False
                )
        except KafkaException as exc:
            self._log._raise(exc, f"reading offsets of {tp.topic}[{tp.partition}]", tp.topic)
        return int(low), int(high)
