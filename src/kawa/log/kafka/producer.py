"""The Kafka producer of the event log."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
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

import kawa.log.kafka.forks as forks
from kawa.log.kafka.common import _BATCH_OVERHEAD, _TRANSIENT, _UNREACHABLE, _metadata

log = logging.getLogger("kawa.log.kafka")


@dataclass(slots=True)
class _Queued:
    """A record the producer owns until Kafka acknowledges it (kept to produce it again after a failure)."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, str | bytes | None]] | None
    partition: int
    timestamp_ms: int
    user: DeliveryCallback | None
    attempts: int = 1


class KafkaProducer:
    """A :class:`~kawa.log.base.Producer` on a librdkafka producer (thread-safe, batched).

    Nothing produced is dropped: a record whose delivery failed for a reason that can pass (the broker down
    past ``message.timeout.ms``, a leader change) is kept and produced again — the same bytes, so the same
    CloudEvent id — by the background poller and by :meth:`flush`, until Kafka acknowledges it. ``flush``
    returns only when every record produced so far is acknowledged, and raises :class:`ProducerError` at its
    timeout with the records still kept. Only a record that can never be stored (too large for the broker,
    its topic deleted) fails its ``on_delivery`` and the next ``flush``.
    """

    def __init__(self, log: KafkaLog, max_record_bytes: int) -> None:
        self._log = log
        self.max_record_bytes = max_record_bytes
        self._failures: list[Exception] = []
        self._retry: deque[_Queued] = deque()
        self._outstanding = 0  # records produced and neither acknowledged nor given up
        self._failures_lock = threading.Lock()
        self._settled = threading.Condition(self._failures_lock)
        self.reproduced = 0  # records produced again after a failed delivery
        self._requeue_said = 0.0
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
        # first record), and produces failed records again.
        self._poller = threading.Thread(target=self._serve, name="kawa-kafka-producer", daemon=True)
        self._poller.start()
        forks.track(self)

    def _forked(self) -> None:
        self._was_forked = self._closed = True
        self._failures_lock = threading.Lock()  # another thread may have held it at the fork
        self._settled = threading.Condition(self._failures_lock)
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
        queued = _Queued(
            topic, value, key, list(headers) if headers else None,
            -1 if partition is None else partition,  # -1: the partitioner decides
            timestamp_ms or 0, on_delivery,  # 0: now
        )  # fmt: skip
        with self._failures_lock:
            self._outstanding += 1
        try:
            self._enqueue(queued, block=True)
        except BaseException:
            self._settle()
            raise

    def _enqueue(self, queued: _Queued, *, block: bool) -> bool:
        """Hand ``queued`` to librdkafka; False when its queue is full and ``block`` is off."""
        deadline = None
        while True:
            try:
                self._producer.produce(
                    queued.topic,
                    queued.value,
                    queued.key,
                    queued.partition,
                    on_delivery=partial(self._delivered, queued=queued),
                    timestamp=queued.timestamp_ms,
                    headers=queued.headers,
                )
                return True
            except BufferError:
                if not block:
                    return False
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
                self._log._raise(exc, f"producing to {queued.topic!r}", queued.topic)

    def _serve(self) -> None:
        """Serve delivery reports in the background, so ``on_delivery`` runs without a flush, and produce
        failed records again."""
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
                self._requeue()
            except Exception:  # a callback raised: say so and keep serving the others
                log.exception("a Kafka delivery callback failed")

    def _check_not_serving(self, what: str) -> None:
        if getattr(self._in_callback, "active", False):
            raise ProducerError(
                f"cannot {what} from a delivery callback: the callback runs while acknowledgements are "
                "being served; hand the work to another thread"
            )

    def _requeue(self) -> None:
        """Produce again the records whose delivery failed and can still succeed (as many as the local queue
        takes now; the rest wait for the next call)."""
        again = 0
        while True:
            with self._failures_lock:
                if not self._retry:
                    break
                queued = self._retry.popleft()
            try:
                handed = self._enqueue(queued, block=False)
            except (RecordTooLarge, TopicNotFound, InvalidPartition) as exc:
                # The topic is gone or the record can no longer be stored: that record fails for good.
                self._give_up(queued, exc)
                continue
            except Exception:
                handed = False  # Kafka refused it for now: keep it for the next round
            if not handed:
                with self._failures_lock:
                    self._retry.appendleft(queued)
                break
            queued.attempts += 1
            again += 1
        if again:
            self.reproduced += again
            now = time.monotonic()
            if now - self._requeue_said >= 10.0:  # one line per ten seconds, however many records
                self._requeue_said = now
                log.warning("Kafka at %s did not acknowledge %d record(s) in time; producing them again (%d so far)",
                            self._log.bootstrap, again, self.reproduced)

    def _delivered(self, error: KafkaError | None, message: Message, queued: _Queued) -> None:
        self._in_callback.active = True
        try:
            self._report(error, message, queued)
        finally:
            self._in_callback.active = False

    def _report(self, error: KafkaError | None, message: Message, queued: _Queued) -> None:
        if error is None:
            self._log.health.reachable()
            self._settle()
            if queued.user is not None:
                queued.user(_metadata(message), None)
            return
        topic = message.topic()
        failure: Exception = self._log.translate(KafkaException(error), f"delivering a record to {topic!r}", topic)
        passing = error.code() in _UNREACHABLE or error.code() in _TRANSIENT or error.retriable()
        if not passing or isinstance(failure, RecordTooLarge | TopicNotFound) or error.fatal():
            self._give_up(queued, failure)  # e.g. a record without a key to a compacted topic
            return
        with self._failures_lock:  # retriable: kept, and produced again by the poller or the next flush
            self._retry.append(queued)

    def _give_up(self, queued: _Queued, failure: Exception) -> None:
        if not isinstance(failure, RecordTooLarge | TopicNotFound | BackendUnavailable):
            failure = ProducerError(f"record to {queued.topic!r} was not delivered: {failure}")
        log.error("a record to %r cannot be delivered: %s", queued.topic, failure)
        with self._failures_lock:
            self._failures.append(failure)
        self._settle()
        if queued.user is not None:
            queued.user(None, failure)

    def _settle(self) -> None:
        with self._failures_lock:
            self._outstanding -= 1
            if self._outstanding <= 0:
                self._settled.notify_all()

    @property
    def outstanding(self) -> int:
        """Records produced and not yet acknowledged (queued, in flight, or waiting to be produced again)."""
        return self._outstanding

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record produced so far is acknowledged (failed ones are produced again);
        :class:`ProducerError` at ``timeout`` (the records stay queued) or if one failed for good since the
        last flush."""
        self._check_not_serving("flush")
        if self._was_forked:
            raise ProducerError(f"this producer {forks.FORKED}")
        timeout = self.default_flush_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            self._requeue()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._producer.flush(min(1.0, left))
            with self._failures_lock:
                if self._outstanding <= 0:
                    break
                if not self._retry:
                    # Reports may be served by the poller: wait for it to settle or fail them.
                    self._settled.wait(0.05)
                    if self._outstanding <= 0:
                        break
        with self._failures_lock:
            failures, self._failures = self._failures, []
            remaining = self._outstanding
        if failures:
            raise ProducerError(f"{len(failures)} record(s) failed; the first: {failures[0]}") from failures[0]
        if remaining > 0:
            raise ProducerError(
                f"{remaining} record(s) not yet acknowledged by Kafka at {self._log.bootstrap} within "
                f"{timeout:g}s; they stay queued and are produced again until it answers"
            )

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
        """Produce one record and wait for its acknowledgement (at most the default flush time); raises the
        record's own error (e.g. :class:`RecordTooLarge`), or :class:`ProducerError` when Kafka did not answer
        in time (the record stays queued and is produced again until it does)."""
        box: list[tuple[RecordMetadata | None, Exception | None]] = []
        done = threading.Event()

        def delivered(metadata: RecordMetadata | None, error: Exception | None) -> None:
            box.append((metadata, error))
            done.set()

        self._check_not_serving("send")
        self.produce(
            topic, value, key=key, headers=headers, partition=partition, timestamp_ms=timestamp_ms,
            on_delivery=delivered,
        )  # fmt: skip
        deadline = time.monotonic() + self.default_flush_s
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProducerError(
                    f"Kafka at {self._log.bootstrap} did not acknowledge a record to {topic!r} within "
                    f"{self.default_flush_s:g}s; it stays queued and is produced again until Kafka answers"
                )
            done.wait(min(0.1, left))  # the poller serves the report and produces failed records again
        metadata, error = box[0]
        if error is not None:
            raise error
        assert metadata is not None
        return metadata

    @property
    def default_flush_s(self) -> float:
        """How long :meth:`flush` without a timeout and :meth:`send` wait: a delivery attempt and a retry."""
        return max(30.0, 3 * self._log.timeout_s)

    def __enter__(self) -> KafkaProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new records, flush (bounded by ``timeout``, default :attr:`default_flush_s`), then stop serving
        delivery reports.
        Records Kafka did not acknowledge by then are reported in the error; whoever produced them must not
        count them as done."""
        if self._was_forked:
            return  # nothing to flush with: the fork left librdkafka's threads in the parent
        with self._failures_lock:
            if self._closed:
                return
            self._closed = True  # first: a flush under threads that keep producing would never end
        try:
            self.flush(timeout)
        finally:
            self._stop.set()
            # librdkafka's handle lives as long as this object, and the poller holds it: nothing is
            # destroyed under a poll in flight.
            self._poller.join(timeout=5)
