"""The embedded log's producer: batches per partition, written by a background flusher or ``flush``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kawa.errors import InvalidPartition, ProducerError, TopicNotFound
from kawa.log.base import (
    DeliveryCallback,
    Headers,
    RecordMetadata,
    SendMixin,
    TopicPartition,
    check_record_size,
    now_ms,
)
from kawa.log.partitioner import NullKeySpreader, partition_for_key

if TYPE_CHECKING:
    from kawa.log.embedded.log import EmbeddedLog

BATCH_BYTES = 1 << 20


class EmbeddedProducer(SendMixin):
    """Queues records per partition; a batch is appended when it reaches ``BATCH_BYTES``, after
    ``linger_ms``, or on :meth:`flush`. A record is acknowledged once its batch is written."""

    def __init__(self, log: EmbeddedLog, max_record_bytes: int, *, linger_ms: float = 1.0) -> None:
        self._log = log
        self._max = max_record_bytes
        self._linger = max(0.0, linger_ms) / 1000
        self._spread = NullKeySpreader()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[
            TopicPartition, list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]]
        ] = {}
        self._callbacks: dict[TopicPartition, list[DeliveryCallback | None]] = {}
        self._pending_bytes = 0
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._immediate = log.fsync == "always" or linger_ms <= 0

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
        if self._closed:
            raise ProducerError("this producer is closed; create a new one")
        spec = self._log.spec(topic)
        count = spec.partitions
        size = check_record_size(topic, key, value, headers, self._max)
        if key is None and "compact" in spec.cleanup_policy:
            raise ProducerError(f"topic {topic!r} is compacted: every record needs a key")
        if partition is None:
            partition = partition_for_key(key, count) if key is not None else self._spread.next(count)
        elif not 0 <= partition < count:
            raise InvalidPartition(f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
        tp = TopicPartition(topic, partition)
        item = (key, value, tuple(headers), timestamp_ms or now_ms())
        with self._lock:
            queue = self._pending.get(tp)
            if queue is None:
                queue = self._pending[tp] = []
                self._callbacks[tp] = []
            queue.append(item)
            self._callbacks[tp].append(on_delivery)
            was_empty = self._pending_bytes == 0
            self._pending_bytes += size + 40
            full = self._pending_bytes >= BATCH_BYTES
            if was_empty and not self._immediate:
                self._ensure_flusher()
                self._wake.notify()
        if full or self._immediate:
            self._write_pending()

    def _ensure_flusher(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._flusher, name="kawa-embedded-producer", daemon=True)
            self._thread.start()

    def _flusher(self) -> None:
        while True:
            with self._lock:
                while not self._pending_bytes and not self._closed:
                    self._wake.wait()
                if self._closed and not self._pending_bytes:
                    return
            if self._linger:
                threading.Event().wait(self._linger)
            self._write_pending()

    def _write_pending(self) -> None:
        with self._write_lock:
            with self._lock:
                pending, callbacks = self._pending, self._callbacks
                self._pending, self._callbacks, self._pending_bytes = {}, {}, 0
            for tp, batch in pending.items():
                cbs = callbacks[tp]
                try:
                    first = self._log.partition(tp).append(batch, self._log.segment_bytes)
                except (TopicNotFound, OSError) as exc:
                    error = (
                        exc
                        if isinstance(exc, TopicNotFound)
                        else ProducerError(f"writing {tp.topic}[{tp.partition}] failed: {exc}")
                    )
                    for callback in cbs:
                        if callback is not None:
                            callback(None, error)
                    continue
                for i, callback in enumerate(cbs):
                    if callback is not None:
                        callback(RecordMetadata(tp.topic, tp.partition, first + i, batch[i][3]), None)

    def flush(self, timeout: float | None = None) -> None:
        self._write_pending()

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
