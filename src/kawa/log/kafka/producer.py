"""The Kafka producer of the event log."""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
)
from confluent_kafka import Producer as _RdProducer

from kawa.errors import (
    BackendUnavailable,
    InvalidPartition,
    ProducerError,
    RecordTooLarge,
    TopicNotFound,
)
from kawa.log.base import (
    DeliveryCallback,
    Headers,
    RecordMetadata,
    check_record_size,
)

if TYPE_CHECKING:
    from kawa.log.kafka.log import KafkaLog

from kawa.log.kafka import forks
from kawa.log.kafka.common import _BATCH_OVERHEAD, _metadata

log = logging.getLogger("kawa.log.kafka")


class KafkaProducer:
    """A :class:`~kawa.log.base.Producer` on a librdkafka producer (thread-safe, batched)."""

    def __init__(self, log: KafkaLog, max_record_bytes: int) -> None:
        self._log = log
        self.max_record_bytes = max_record_bytes
        self._failures: list[Exception] = []
        self._failures_lock = threading.Lock()
        conf = log.client_conf(
            **{
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 30_000,
                "message.max.bytes": max(1_000_000, max_record_bytes + _BATCH_OVERHEAD),
                # Refers to the cluster's health only, not to this object (see kafka/quiet.py).
                "error_cb": log.health.error_callback(log.health.client_name("producer")),
            }
        )
        self._producer = _RdProducer(conf)
        self._closed = False
        self._was_forked = False
        self._stop = threading.Event()
        # Inside a delivery callback (on the poller, or in a thread's flush): a poll from there would be
        # nested in the poll that runs the callback, which crashes confluent-kafka.
        self._in_callback = threading.local()
        # Serves delivery reports, logs and errors from the start (a down broker is reported before the
        # first record).
        self._poller = threading.Thread(target=self._serve, name="kawa-kafka-producer", daemon=True)
        self._poller.start()
        forks.track(self)

    def _forked(self) -> None:
        self._was_forked = self._closed = True
        self._failures_lock = threading.Lock()  # another thread may have held it at the fork
        forks.keep_forever(self._producer)

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
            closed = forks.FORKED if self._was_forked else "is closed; create a new one"
            raise ProducerError(f"this producer {closed}")
        check_record_size(topic, key, value, headers, self.max_record_bytes)
        count = self._log.partition_count(topic)
        if partition is not None and not 0 <= partition < count:
            count = self._log.partition_count(topic, fresh=True)
            if not 0 <= partition < count:
                raise InvalidPartition(
                    f"topic {topic!r} has partitions 0..{count - 1}; partition {partition} does not exist"
                )
        callback = self._delivered if on_delivery is None else partial(self._delivered, user=on_delivery)
        deadline = None
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,  # -1: the partitioner decides
                    on_delivery=callback,
                    timestamp=timestamp_ms or 0,  # 0: now
                    headers=list(headers) if headers else None,
                )
                return
            except BufferError:
                # The local queue is full: wait for acknowledgements to make room, as Java's max.block.ms.
                # The poller serves them (a poll here could be nested in a delivery callback's).
                self._check_not_serving("produce to a full queue")
                deadline = deadline or time.monotonic() + self._log.timeout_s
                if time.monotonic() > deadline:
                    raise ProducerError(
                        f"the producer queue stayed full for {self._log.timeout_s:g}s: Kafka at "
                        f"{self._log.bootstrap} is not keeping up or not reachable"
                    ) from None
                self._stop.wait(0.02)
            except KafkaException as exc:
                self._log._raise(exc, f"producing to {topic!r}", topic)

    def _serve(self) -> None:
        """Serve delivery reports in the background, so ``on_delivery`` runs without a flush."""
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
            except Exception:  # a callback raised: say so and keep serving the others
                log.exception("a Kafka delivery callback failed")

    def _check_not_serving(self, what: str) -> None:
        if getattr(self._in_callback, "active", False):
            raise ProducerError(
                f"cannot {what} from a delivery callback: the callback runs while acknowledgements are "
                "being served; hand the work to another thread"
            )

    def _delivered(self, error: KafkaError | None, message: Message, user: DeliveryCallback | None = None) -> None:
        self._in_callback.active = True
        try:
            self._report(error, message, user)
        finally:
            self._in_callback.active = False

    def _report(self, error: KafkaError | None, message: Message, user: DeliveryCallback | None) -> None:
        if error is not None:
            topic = message.topic()
            failure: Exception = self._log.translate(KafkaException(error), f"delivering a record to {topic!r}", topic)
            if not isinstance(failure, RecordTooLarge | TopicNotFound | BackendUnavailable):
                failure = ProducerError(f"record to {topic!r} was not delivered: {error.str()}")
            with self._failures_lock:
                self._failures.append(failure)
            if user is not None:
                user(None, failure)
        else:
            self._log.health.reachable()
            if user is not None:
                user(_metadata(message), None)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record; :class:`ProducerError` if one is left or one failed since the
        last flush."""
        self._check_not_serving("flush")
        if self._was_forked:
            raise ProducerError(f"this producer {forks.FORKED}")
        remaining = self._producer.flush() if timeout is None else self._producer.flush(timeout)
        with self._failures_lock:
            failures, self._failures = self._failures, []
        if remaining:
            raise ProducerError(
                f"{remaining} record(s) not acknowledged by Kafka at {self._log.bootstrap} within {timeout}s"
            )
        if failures:
            raise ProducerError(f"{len(failures)} record(s) failed; the first: {failures[0]}") from failures[0]

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
        """Produce one record and wait for it; raises the record's own error (e.g. :class:`RecordTooLarge`)."""
        box: list[tuple[RecordMetadata | None, Exception | None]] = []
        self.produce(
            topic,
            value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp_ms=timestamp_ms,
            on_delivery=lambda metadata, error: box.append((metadata, error)),
        )
        try:
            self.flush()
        except ProducerError:
            if not box or box[0][1] is None:
                raise
        if not box:
            raise ProducerError(f"record to {topic!r} was not acknowledged")
        metadata, error = box[0]
        if error is not None:
            raise error
        assert metadata is not None
        return metadata

    def __enter__(self) -> KafkaProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Refuse new records, flush, then stop serving delivery reports."""
        if self._was_forked:
            return  # nothing to flush with: the fork left librdkafka's threads in the parent
        with self._failures_lock:
            if self._closed:
                return
            self._closed = True  # first: a flush under threads that keep producing would never end
        try:
            self.flush()
        finally:
            self._stop.set()
            # librdkafka's handle lives as long as this object, and the poller holds it: nothing is
            # destroyed under a poll in flight.
            self._poller.join(timeout=5)
