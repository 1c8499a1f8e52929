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
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from confluent_kafka import (
    KafkaError,
    KafkaException,
)
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
    InvalidTopicSpec,
    KawaError,
    LogError,
    RecordTooLarge,
    TopicExists,
    TopicNotFound,
)
from kawa.log.base import (
    OffsetReset,
    PartitionInfo,
    PartitionLag,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    validate_topic_name,
)

if TYPE_CHECKING:
    from kawa.config import KawaConfig

import kawa.log.kafka.forks as forks
from kawa.log.kafka.common import (
    _BATCH_OVERHEAD,
    _BROKER_DEFAULT_MAX_MESSAGE_BYTES,
    _COMMIT_REFUSED,
    _EARLIEST,
    _INVALID_SPEC,
    _LATEST,
    _METADATA_TTL_S,
    _TRANSIENT,
    _UNREACHABLE,
    DEFAULT_PORT,
    T,
    _cleanup_policy,
    _unlimited,
)
from kawa.log.kafka.consumer import KafkaConsumer
from kawa.log.kafka.groups import committed_offsets
from kawa.log.kafka.producer import KafkaProducer
from kawa.log.kafka.quiet import ClusterHealth

__all__ = ["KafkaConsumer", "KafkaLog", "KafkaProducer", "build", "parse_bootstrap"]

log = logging.getLogger("kawa.log.kafka")

# Our librdkafka defaults for every client (log.kafka.extra overrides them): a broker closing an idle
# connection is not news; reconnect soon after a short outage, and at most every 5 s during a long one.
_QUIET: dict[str, Any] = {
    "log.connection.close": False,
    "reconnect.backoff.ms": 200,
    "reconnect.backoff.max.ms": 5000,
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
        #: What this cluster's clients see of its reachability; librdkafka's logs go through it.
        self.health = ClusterHealth(bootstrap)
        self._client_conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": self.health.logger, **_QUIET}
        self._user_conf: dict[str, Any] = config.log.kafka.librdkafka()
        self._topic_config = dict(topic_config or {})
        self._replication_factor = replication_factor
        try:
            self._admin = self._new_admin()
        except KafkaException as exc:
            raise ConfigError(f"invalid Kafka client settings (log.kafka in kawa.yaml): {exc.args[0].str()}") from exc
        self._metadata_lock = threading.Lock()
        self._partition_counts: dict[str, int] = {}
        self._metadata_at = 0.0
        forks.track(self)

    def _new_admin(self) -> AdminClient:
        return AdminClient(self.client_conf(error_cb=self.health.error_callback("admin client")))

    def _forked(self) -> None:
        # The admin client's threads stayed in the parent: a new one for this process.
        self._metadata_lock = threading.Lock()
        self.health = ClusterHealth(self.bootstrap)
        self._client_conf["logger"] = self.health.logger
        forks.keep_forever(self._admin)
        self._admin = self._new_admin()

    def client_conf(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka settings for a client of this cluster: our defaults, then ``overrides``, then the
        configured ones (``log.kafka``), so a user can override anything."""
        return {**self._client_conf, **overrides, **self._user_conf}

    def _drain(self, answered: bool) -> None:
        """Serve the admin client's logs and errors (they wait for a poll), and note an answer."""
        self._admin.poll(0)
        if answered:
            self.health.reachable()

    # --- errors -----------------------------------------------------------------------------------

    def unreachable(self, what: str, detail: object) -> BackendUnavailable:
        self._drain(answered=False)
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
                result = request()
                self._drain(answered=True)
                return result
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
        self._drain(answered=True)
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
        subscribed: set[str] = set()
        if wanted is None:
            # Only when asked for every topic: the admin client's group calls go through the same coordinator
            # lookup that can crash librdkafka 2.16 while a restarted broker loads its groups (see groups.py).
            description = self.call(
                f"reading offsets of group {group!r}",
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
        counts = self._metadata()
        if wanted is not None:
            for topic in sorted(wanted - set(counts)):
                self.partition_count(topic, fresh=True)  # TopicNotFound, unless it just appeared
            counts = {t: self.partition_count(t) for t in wanted}
        else:
            counts = {t: n for t, n in counts.items() if not t.startswith("__")}
        # Not the admin client's list_consumer_group_offsets: it can crash the process (see groups.py).
        committed = committed_offsets(self, group, counts)
        # As the other backends: every partition of the asked topics, else of the topics the group
        # subscribes to or has committed.
        if wanted is None:
            shown = (subscribed | {tp.topic for tp, offset in committed.items() if offset is not None}) & set(counts)
        else:
            shown = wanted
        lags: list[PartitionLag] = []
        for topic in sorted(shown):
            partitions = range(counts[topic])
            ends = self._list_offsets(topic, partitions, _LATEST)
            starts = self._list_offsets(topic, partitions, _EARLIEST)
            for p in partitions:
                done = committed.get(TopicPartition(topic, p))
                base = starts[p] if done is None else done
                lags.append(PartitionLag(topic, p, done, ends[p], max(ends[p] - base, 0)))
        return lags

    def close(self) -> None:
        """Nothing to release: producers and consumers are closed by their owners."""
