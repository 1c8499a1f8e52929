"""The Apache Kafka backend of the event log (``kafka://host:port[,host:port]``), on confluent-kafka.

Guarantees, as the contract in :mod:`kawa.log.base` states them, and how Kafka gives them:

- **Ordering** per partition: the producer is idempotent (``enable.idempotence``), so retries neither
  reorder nor duplicate records within a partition.
- **Acknowledgement** means the partition leader and all in-sync replicas stored the record (``acks=all``,
  implied by idempotence). On a single broker that is one copy in the OS page cache: Kafka does not fsync per
  record; durability comes from replication (use replication factor ≥ 3 and ``min.insync.replicas`` 2 in
  production).
- **Keys → partitions** with ``partitioner=murmur2_random``: the Java client's placement, the same as the
  embedded backend's.
- **Consumer groups**: partitions are assigned with the ``cooperative-sticky`` strategy (an eager one set in
  ``log.kafka.extra`` works too); offsets are committed
  only by :meth:`KafkaConsumer.commit` (auto-commit is off), synchronously. Delivery is at-least-once: after a
  rebalance or a crash the new owner of a partition resumes at the last committed offset. A member cannot
  commit a partition that is not assigned to it (:class:`CommitFailed`); Kafka's classic group protocol would
  accept such a commit, so this backend refuses it on the client side.
- **Broker down**: admin calls, ``produce`` (which checks the topic first) and ``commit`` give up after
  ``timeout_s`` with :class:`BackendUnavailable`; queued records fail after ``message.timeout.ms`` (30 s by
  default), so ``flush`` never blocks forever.

Retention and compaction are the broker's: they act on closed segments, in the background, so old records go
some time after they expire (``segment.ms``/``segment.bytes`` decide when a segment closes). Extra topic
settings for every topic this backend creates can be passed as ``topic_config``.

SASL/TLS settings come from ``log.kafka`` in the configuration (:meth:`KafkaClientConfig.librdkafka`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from confluent_kafka import Consumer as _RdConsumer
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
)
from confluent_kafka import Producer as _RdProducer
from confluent_kafka import TopicPartition as _RdTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from kawa.errors import (
    BackendUnavailable,
    CommitFailed,
    ConfigError,
    InvalidPartition,
    InvalidTopicSpec,
    KawaError,
    LogError,
    ProducerError,
    RecordTooLarge,
    TopicExists,
    TopicNotFound,
)
from kawa.log.base import (
    CleanupPolicy,
    DeliveryCallback,
    Headers,
    OffsetReset,
    PartitionInfo,
    PartitionLag,
    Record,
    RecordMetadata,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    validate_topic_name,
)

if TYPE_CHECKING:
    from kawa.config import KawaConfig

__all__ = ["KafkaConsumer", "KafkaLog", "KafkaProducer", "build"]

T = TypeVar("T")
log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger("kawa.log.kafka.librdkafka")

DEFAULT_PORT = 9092
_BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # Kafka's message.max.bytes default
_BATCH_OVERHEAD = 64 * 1024
_METADATA_TTL_S = 10.0
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]

_UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
}
_INVALID_SPEC = {
    KafkaError.INVALID_PARTITIONS,
    KafkaError.INVALID_REPLICATION_FACTOR,
    KafkaError.INVALID_CONFIG,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.POLICY_VIOLATION,
}
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}
_COMMIT_REFUSED = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST,
    KafkaError._STATE,
}


def build(
    uri: str,
    *,
    config: KawaConfig,
    topic_config: Mapping[str, str] | None = None,
    replication_factor: int = -1,
    timeout_s: float = 10.0,
) -> KafkaLog:
    """Open the Kafka cluster ``kafka://host:port[,host:port]``.

    ``topic_config``: extra topic settings (``segment.ms``, ``min.insync.replicas``...) for every topic
    created through this log. ``replication_factor``: -1 uses the broker's ``default.replication.factor``.
    ``timeout_s`` bounds each admin and metadata request. Nothing connects until the first call.
    """
    return KafkaLog(
        parse_bootstrap(uri),
        config=config,
        topic_config=topic_config,
        replication_factor=replication_factor,
        timeout_s=timeout_s,
    )


def parse_bootstrap(uri: str) -> str:
    """``kafka://a:9092,b:9092`` → ``a:9092,b:9092`` (the port defaults to 9092)."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "kafka" or not parts.netloc or parts.path.strip("/") or parts.query:
        raise ConfigError(f"invalid Kafka URI {uri!r}: write kafka://host:port[,host:port]")
    servers = []
    for server in parts.netloc.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep:
            host, port = port, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"invalid Kafka URI {uri!r}: {server!r} is not host:port; write kafka://host:port")
        servers.append(f"{host}:{port}")
    return ",".join(servers)


class KafkaLog:
    """An :class:`~kawa.log.base.EventLog` on an Apache Kafka cluster."""

    def __init__(
        self,
        bootstrap: str,
        *,
        config: KawaConfig,
        topic_config: Mapping[str, str] | None = None,
        replication_factor: int = -1,
        timeout_s: float = 10.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.uri = f"kafka://{bootstrap}"
        self.timeout_s = timeout_s
        self.max_record_bytes = config.log.max_record_bytes
        self.default_session_timeout_ms = config.log.kafka.session_timeout_ms
        self._client_conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "logger": _rdkafka_log,
            **config.log.kafka.librdkafka(),
        }
        self._topic_config = dict(topic_config or {})
        self._replication_factor = replication_factor
        try:
            self._admin = AdminClient(self.client_conf())
        except KafkaException as exc:
            raise ConfigError(f"invalid Kafka client settings (log.kafka in kawa.yaml): {exc.args[0].str()}") from exc
        self._metadata_lock = threading.Lock()
        self._partition_counts: dict[str, int] = {}
        self._metadata_at = 0.0

    def client_conf(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka settings for a client of this cluster: our defaults, then ``overrides``, then the
        configured ones (``log.kafka``), so a user can override anything."""
        return {**self._client_conf, **overrides, **self._client_conf_user()}

    def _client_conf_user(self) -> dict[str, Any]:
        return {k: v for k, v in self._client_conf.items() if k not in ("bootstrap.servers", "logger")}

    # --- errors -----------------------------------------------------------------------------------

    def unreachable(self, what: str, detail: object) -> BackendUnavailable:
        return BackendUnavailable(
            f"cannot reach Kafka at {self.bootstrap} ({what}: {detail}): start the broker or fix log.uri"
        )

    def translate(self, exc: BaseException, what: str, topic: str | None = None) -> KawaError:
        """A confluent-kafka error as a :class:`KawaError`."""
        if isinstance(exc, KawaError):
            return exc
        if isinstance(exc, concurrent.futures.TimeoutError):
            return self.unreachable(what, f"no answer within {self.timeout_s:g}s")
        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
        if not isinstance(error, KafkaError):
            return LogError(f"{what} failed: {exc}")
        code = error.code()
        if code in _UNREACHABLE:
            return self.unreachable(what, error.str())
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return TopicNotFound(f"topic {topic!r} does not exist in Kafka at {self.bootstrap}; create it first")
        if code == KafkaError.TOPIC_ALREADY_EXISTS:
            return TopicExists(f"topic {topic!r} already exists; pass exist_ok=True to accept it")
        if code in _INVALID_SPEC:
            return InvalidTopicSpec(f"Kafka refused topic {topic!r}: {error.str()}")
        if code in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE):
            return RecordTooLarge(
                f"Kafka refused a record for {topic!r} as too large ({error.str()}); send smaller records "
                "or raise the topic's max.message.bytes"
            )
        if code in _COMMIT_REFUSED:
            return CommitFailed(f"{what} refused: {error.str()}; the group rebalanced, poll and retry")
        return LogError(f"{what} failed: {error.str()}")

    def _raise(self, exc: BaseException, what: str, topic: str | None = None) -> NoReturn:
        raise self.translate(exc, what, topic) from exc

    def call(self, what: str, topic: str | None, request: Callable[[], T]) -> T:
        """Run a request, retrying transient errors (leader moving, coordinator loading) for ``timeout_s``;
        other errors translated."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return request()
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                transient = isinstance(error, KafkaError) and error.code() in _TRANSIENT
                if not transient or time.monotonic() > deadline:
                    self._raise(exc, what, topic)
            except concurrent.futures.TimeoutError as exc:
                self._raise(exc, what, topic)
            time.sleep(0.05)

    # --- metadata ---------------------------------------------------------------------------------

    def _metadata(self) -> dict[str, int]:
        """Topic → partition count, straight from the cluster (internal topics included)."""
        return self._read_metadata()[0]

    def _read_metadata(self) -> tuple[dict[str, int], set[str]]:
        """(topic → partition count, topics whose partitions all have a leader)."""
        try:
            metadata = self._admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            self._raise(exc, "reading cluster metadata")
        ready = {
            name
            for name, topic in metadata.topics.items()
            if topic.error is None
            and topic.partitions
            and all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
        }
        counts = {
            name: len(topic.partitions)
            for name, topic in metadata.topics.items()
            if topic.error is None or topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART
        }
        with self._metadata_lock:
            self._partition_counts = counts
            self._metadata_at = time.monotonic()
        return counts, ready

    def partition_count(self, topic: str, *, fresh: bool = False) -> int:
        """The topic's partition count from cached metadata (refreshed on a miss); :class:`TopicNotFound`."""
        count = None
        if not fresh and time.monotonic() - self._metadata_at <= _METADATA_TTL_S:
            count = self._partition_counts.get(topic)  # the dict is replaced whole, never mutated in place
        if count is None:
            count = self._metadata().get(topic)
        if count is None:
            raise TopicNotFound(
                f"topic {topic!r} does not exist in Kafka at {self.bootstrap}; create it first "
                f"(kawa topics create {topic})"
            )
        return count

    def _forget(self, topic: str) -> None:
        with self._metadata_lock:
            self._partition_counts = {k: v for k, v in self._partition_counts.items() if k != topic}

    def _wait_metadata(self, topic: str, present: bool) -> None:
        """Wait until the cluster's metadata shows ``topic`` with a leader for every partition (or no longer
        shows it)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            counts, ready = self._read_metadata()
            if topic in ready if present else topic not in counts:
                return
            if time.monotonic() > deadline:
                state = "appear in" if present else "disappear from"
                raise self.unreachable(f"waiting for topic {topic!r} to {state} metadata", "timed out")
            time.sleep(0.05)

    # --- topics -----------------------------------------------------------------------------------

    def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        configs = {
            "cleanup.policy": spec.cleanup_policy,
            "retention.ms": str(spec.retention_ms if spec.retention_ms is not None else -1),
            "retention.bytes": str(spec.retention_bytes if spec.retention_bytes is not None else -1),
        }
        if self.max_record_bytes + _BATCH_OVERHEAD > _BROKER_DEFAULT_MAX_MESSAGE_BYTES:
            configs["max.message.bytes"] = str(self.max_record_bytes + _BATCH_OVERHEAD)
        configs.update(self._topic_config)
        new = NewTopic(spec.name, spec.partitions, self._replication_factor, config=configs)
        futures = self._admin.create_topics([new], operation_timeout=self.timeout_s, request_timeout=self.timeout_s)
        try:
            futures[spec.name].result(timeout=self.timeout_s + 1)
        except (KafkaException, concurrent.futures.TimeoutError) as exc:
            error = self.translate(exc, f"creating topic {spec.name!r}", spec.name)
            if not (exist_ok and isinstance(error, TopicExists)):
                raise error from exc
        self._wait_metadata(spec.name, present=True)

    def list_topics(self) -> list[str]:
        """Topic names, without Kafka's internal ``__`` topics."""
        return sorted(name for name in self._metadata() if not name.startswith("__"))

    def describe_topic(self, name: str) -> TopicInfo:
        validate_topic_name(name)
        count = self.partition_count(name, fresh=True)
        starts = self._list_offsets(name, range(count), _EARLIEST)
        ends = self._list_offsets(name, range(count), _LATEST)
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        entries = self.call(
            f"describing topic {name!r}",
            name,
            lambda: self._admin.describe_configs([resource], request_timeout=self.timeout_s)[resource].result(
                timeout=self.timeout_s + 1
            ),
        )
        values = {key: entry.value for key, entry in entries.items()}
        return TopicInfo(
            name=name,
            partitions=tuple(PartitionInfo(p, starts[p], ends[p]) for p in range(count)),
            retention_ms=_unlimited(values.get("retention.ms")),
            retention_bytes=_unlimited(values.get("retention.bytes")),
            cleanup_policy=_cleanup_policy(values.get("cleanup.policy")),
        )

    def delete_topic(self, name: str) -> None:
        validate_topic_name(name)
        futures = self._admin.delete_topics([name], operation_timeout=self.timeout_s, request_timeout=self.timeout_s)
        try:
            futures[name].result(timeout=self.timeout_s + 1)
        except (KafkaException, concurrent.futures.TimeoutError) as exc:
            self._raise(exc, f"deleting topic {name!r}", name)
        finally:
            self._forget(name)
        self._wait_metadata(name, present=False)

    def _list_offsets(self, topic: str, partitions: Iterable[int], spec: OffsetSpec) -> dict[int, int]:
        request = {_RdTopicPartition(topic, p): spec for p in partitions}
        if not request:
            return {}

        def list_offsets() -> dict[int, int]:
            futures = self._admin.list_offsets(request, request_timeout=self.timeout_s)
            return {tp.partition: int(f.result(timeout=self.timeout_s + 1).offset) for tp, f in futures.items()}

        return self.call(f"listing offsets of {topic!r}", topic, list_offsets)

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        count = self.partition_count(topic, fresh=True)
        found = self._list_offsets(topic, range(count), OffsetSpec.for_timestamp(timestamp_ms))
        missing = [p for p, offset in found.items() if offset < 0]
        ends = self._list_offsets(topic, missing, _LATEST)
        return {p: (ends[p] if offset < 0 else offset) for p, offset in sorted(found.items())}

    # --- clients ----------------------------------------------------------------------------------

    def producer(self, *, max_record_bytes: int | None = None) -> KafkaProducer:
        return KafkaProducer(self, max_record_bytes or self.max_record_bytes)

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: OffsetReset = "earliest",
        session_timeout_ms: int | None = None,
        client_id: str | None = None,
    ) -> KafkaConsumer:
        return KafkaConsumer(
            self,
            group,
            topics,
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=session_timeout_ms or self.default_session_timeout_ms,
            client_id=client_id,
        )

    def lag(self, group: str, topics: Sequence[str] | None = None) -> list[PartitionLag]:
        wanted = set(topics) if topics is not None else None
        committed: dict[TopicPartition, int | None] = {}
        request = [ConsumerGroupTopicPartitions(group)]
        what = f"reading offsets of group {group!r}"
        result = self.call(
            what,
            None,
            lambda: self._admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)[group].result(
                timeout=self.timeout_s + 1
            ),
        )
        for tp in result.topic_partitions or []:
            committed[TopicPartition(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        description = self.call(
            what,
            None,
            lambda: self._admin.describe_consumer_groups([group], request_timeout=self.timeout_s)[group].result(
                timeout=self.timeout_s + 1
            ),
        )
        subscribed = {
            tp.topic
            for member in description.members or []
            for tp in (member.assignment.topic_partitions if member.assignment else [])
        }
        # As the other backends: every partition of the asked topics, else of the topics the group
        # subscribes to or has committed.
        lags: list[PartitionLag] = []
        for topic in sorted(wanted if wanted is not None else subscribed | {tp.topic for tp in committed}):
            try:
                partitions = range(self.partition_count(topic, fresh=True))
            except TopicNotFound:
                if wanted is not None:
                    raise
                continue
            ends = self._list_offsets(topic, partitions, _LATEST)
            starts = self._list_offsets(topic, partitions, _EARLIEST)
            for p in partitions:
                done = committed.get(TopicPartition(topic, p))
                base = starts[p] if done is None else done
                lags.append(PartitionLag(topic, p, done, ends[p], max(ends[p] - base, 0)))
        return lags

    def close(self) -> None:
        """Nothing to release: producers and consumers are closed by their owners."""


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
                "error_cb": self._on_error,
            }
        )
        self._producer = _RdProducer(conf)
        self._closed = False
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("Kafka producer fatal error: %s", error.str())
        else:
            log.debug("Kafka producer: %s", error.str())

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
        size = (len(value) if value else 0) + (len(key) if key else 0)
        if headers:
            size += sum(len(k.encode()) + len(v or b"") for k, v in headers)
        if size > self.max_record_bytes:
            raise RecordTooLarge(
                f"record for {topic!r} is {size} bytes (key + value + headers), above the limit of "
                f"{self.max_record_bytes} bytes; store large payloads in the object store and send a reference"
            )
        count = self._log.partition_count(topic)
        if partition is not None and not 0 <= partition < count:
            count = self._log.partition_count(topic, fresh=True)
            if not 0 <= partition < count:
                raise InvalidPartition(
                    f"topic {topic!r} has partitions 0..{count - 1}; partition {partition} does not exist"
                )
        callback = self._delivered if on_delivery is None else partial(self._delivered, user=on_delivery)
        if self._poller is None:
            self._start_poller()
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
                deadline = deadline or time.monotonic() + self._log.timeout_s
                if time.monotonic() > deadline:
                    raise ProducerError(
                        f"the producer queue stayed full for {self._log.timeout_s:g}s: Kafka at "
                        f"{self._log.bootstrap} is not keeping up or not reachable"
                    ) from None
                self._producer.poll(0.05)
            except KafkaException as exc:
                self._log._raise(exc, f"producing to {topic!r}", topic)

    def _start_poller(self) -> None:
        with self._failures_lock:
            if self._poller is None and not self._closed:
                self._poller = threading.Thread(target=self._serve, name="kawa-kafka-producer", daemon=True)
                self._poller.start()

    def _serve(self) -> None:
        """Serve delivery reports in the background, so ``on_delivery`` runs without a flush."""
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, message: Message, user: DeliveryCallback | None = None) -> None:
        if error is not None:
            topic = message.topic()
            failure: Exception = self._log.translate(KafkaException(error), f"delivering a record to {topic!r}", topic)
            if not isinstance(failure, RecordTooLarge | TopicNotFound | BackendUnavailable):
                failure = ProducerError(f"record to {topic!r} was not delivered: {error.str()}")
            with self._failures_lock:
                self._failures.append(failure)
            if user is not None:
                user(None, failure)
        elif user is not None:
            user(_metadata(message), None)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record; :class:`ProducerError` if one is left or one failed since the
        last flush."""
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
        """Flush, then stop serving delivery reports."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._failures_lock:
                self._closed = True
            self._stop.set()
            if self._poller is not None:
                self._poller.join(timeout=5)


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
            "error_cb": self._on_error,
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

    def _on_error(self, error: KafkaError) -> None:
        log.debug("Kafka consumer %s: %s", self.group, error.str())

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self._check_open()
        try:
            # consume(n, timeout) waits for all n records; take what is buffered, else wait for one.
            messages: list[Any] = self._consumer.consume(max_records, 0)  # Any: a delivered message has all fields
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
                log.debug("Kafka consumer %s: %s", self.group, error.str())
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
        if not self._closed:
            self._closed = True
            self._assigned.clear()
            self._consumer.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("this consumer is closed; create a new one")

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                _RdTopicPartition(tp.topic, tp.partition), timeout=self._log.timeout_s, cached=False
            )
        except KafkaException as exc:
            self._log._raise(exc, f"reading offsets of {tp.topic}[{tp.partition}]", tp.topic)
        return int(low), int(high)


def _names(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)


def _headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    pairs = headers.items() if isinstance(headers, dict) else headers
    return tuple((name, value.encode() if isinstance(value, str) else (value or b"")) for name, value in pairs)


def _metadata(message: Message) -> RecordMetadata:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None, "a delivered message has all three"
    return RecordMetadata(topic, partition, offset, message.timestamp()[1])


def _unlimited(value: str | None) -> int | None:
    if value is None:
        return None
    number = int(value)
    return None if number < 0 else number


def _cleanup_policy(value: str | None) -> CleanupPolicy:
    parts = {p.strip() for p in (value or "delete").split(",")}
    if parts == {"compact", "delete"}:
        return "compact,delete"
    return "compact" if "compact" in parts else "delete"
