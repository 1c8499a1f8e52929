"""The embedded event log: Kafka's model on the local disk, no server process.

Layout under the root (``<home>/log`` by default)::

    topics/<topic>/topic.json        partitions, retention, cleanup policy
    topics/<topic>/<partition>/      segments + hwm (see ``segment.py``)
    groups/<group>.json (+ .lock)    members, generation, assignment, committed offsets

Several processes may produce and consume at once (file locks, see ``partition.py``). Durability
(``log.fsync``): ``never`` (default) — an acknowledged record has been written to the OS, so it survives
SIGKILL of any Kawa process but not a power loss; ``batch`` — each acknowledged batch is fsynced;
``always`` — every record is written and fsynced on its own before it is acknowledged.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kawa.errors import ConfigError, InvalidPartition, LogError, TopicExists, TopicNotFound
from kawa.log.base import (
    DEFAULT_MAX_RECORD_BYTES,
    OffsetReset,
    PartitionInfo,
    PartitionLag,
    Record,
    TopicInfo,
    TopicPartition,
    TopicSpec,
    now_ms,
    validate_topic_name,
)
from kawa.log.embedded.partition import Partition
from kawa.log.embedded.producer import EmbeddedProducer
from kawa.log.groups import (
    GroupConsumer,
    GroupState,
    Membership,
    apply_heartbeat,
    check_commit,
    compute_lag,
    rebalance,
)
from kawa.log.retention import DELETE_RETENTION_MS

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


class EmbeddedLog:
    """The on-disk :class:`~kawa.log.base.EventLog` (schemes ``embedded:`` and a path)."""

    def __init__(
        self,
        root: Path,
        *,
        uri: str | None = None,
        fsync: str = "never",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        delete_retention_ms: int = DELETE_RETENTION_MS,
    ) -> None:
        self.root = Path(root)
        self.uri = uri or str(self.root)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.max_record_bytes = max_record_bytes
        self.delete_retention_ms = delete_retention_ms
        self._topics_dir = self.root / "topics"
        self._groups_dir = self.root / "groups"
        self._topics_dir.mkdir(parents=True, exist_ok=True)
        self._groups_dir.mkdir(parents=True, exist_ok=True)
        self._partitions: dict[TopicPartition, Partition] = {}
        self._specs: dict[str, TopicSpec] = {}
        self._lock = threading.Lock()

    # --- topics -----------------------------------------------------------------------------------

    @contextmanager
    def _admin_lock(self) -> Iterator[None]:
        fd = os.open(self._topics_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        with self._admin_lock():
            path = self._topics_dir / spec.name
            if (path / "topic.json").exists():
                if exist_ok:
                    return
                raise TopicExists(f"topic {spec.name!r} already exists")
            staging = self._topics_dir / f".new-{spec.name}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            for p in range(spec.partitions):
                (staging / str(p)).mkdir()
            (staging / "topic.json").write_text(
                json.dumps(
                    {
                        "partitions": spec.partitions,
                        "retention_ms": spec.retention_ms,
                        "retention_bytes": spec.retention_bytes,
                        "cleanup_policy": spec.cleanup_policy,
                    }
                )
            )
            os.replace(staging, path)

    def list_topics(self) -> list[str]:
        return sorted(
            p.name for p in self._topics_dir.iterdir() if not p.name.startswith(".") and (p / "topic.json").exists()
        )

    def spec(self, name: str, *, refresh: bool = False) -> TopicSpec:
        """The topic's settings (cached; ``refresh`` re-reads them)."""
        if not refresh:
            cached = self._specs.get(name)
            if cached is not None:
                return cached
        validate_topic_name(name)
        try:
            data = json.loads((self._topics_dir / name / "topic.json").read_text())
        except FileNotFoundError:
            self._specs.pop(name, None)
            raise TopicNotFound(
                f"topic {name!r} does not exist in {self.root}; create it with `kawa topics create {name}`"
            ) from None
        spec = TopicSpec(
            name, data["partitions"], data["retention_ms"], data["retention_bytes"], data["cleanup_policy"]
        )
        self._specs[name] = spec
        return spec

    def partition(self, tp: TopicPartition) -> Partition:
        part = self._partitions.get(tp)
        if part is None:
            with self._lock:
                part = self._partitions.get(tp)
                if part is None:
                    spec = self.spec(tp.topic)
                    if not 0 <= tp.partition < spec.partitions:
                        raise InvalidPartition(
                            f"topic {tp.topic!r} has partitions 0..{spec.partitions - 1}, not {tp.partition}"
                        )
                    part = Partition(
                        self._topics_dir / tp.topic / str(tp.partition), tp.topic, tp.partition, self.fsync
                    )
                    self._partitions[tp] = part
        return part

    def describe_topic(self, name: str) -> TopicInfo:
        spec = self.spec(name, refresh=True)
        parts = []
        for p in range(spec.partitions):
            start, end = self.partition(TopicPartition(name, p)).bounds()
            parts.append(PartitionInfo(p, start, end))
        return TopicInfo(name, tuple(parts), spec.retention_ms, spec.retention_bytes, spec.cleanup_policy)

    def delete_topic(self, name: str) -> None:
        with self._admin_lock():
            self.spec(name, refresh=True)
            grave = self._topics_dir / f".deleted-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(self._topics_dir / name, grave)
            with self._lock:
                for tp in [tp for tp in self._partitions if tp.topic == name]:
                    self._partitions.pop(tp).close()
                self._specs.pop(name, None)
            shutil.rmtree(grave, ignore_errors=True)

    # --- produce / consume ------------------------------------------------------------------------

    def producer(self, *, max_record_bytes: int | None = None, linger_ms: float = 1.0) -> EmbeddedProducer:
        return EmbeddedProducer(self, max_record_bytes or self.max_record_bytes, linger_ms=linger_ms)

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: OffsetReset = "earliest",
        session_timeout_ms: int | None = None,
        client_id: str | None = None,
    ) -> GroupConsumer:
        _validate_group(group)
        return GroupConsumer(
            group,
            topics,
            _FileCoordinator(self),
            _DiskSource(self),
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=session_timeout_ms,
            client_id=client_id,
        )

    def lag(self, group: str, topics: Sequence[str] | None = None) -> list[PartitionLag]:
        _validate_group(group)
        coordinator = _FileCoordinator(self)
        return compute_lag(
            coordinator.committed(group), coordinator.subscribed_topics(group), _DiskSource(self), topics
        )

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        spec = self.spec(topic, refresh=True)
        return {
            p: self.partition(TopicPartition(topic, p)).offset_for_time(timestamp_ms) for p in range(spec.partitions)
        }

    # --- maintenance ------------------------------------------------------------------------------

    def maintain(self, now: int | None = None) -> None:
        """Apply retention and compaction to every topic now (``kawa up`` runs this periodically)."""
        now = now_ms() if now is None else now
        for name in self.list_topics():
            try:
                spec = self.spec(name, refresh=True)
                for p in range(spec.partitions):
                    self.partition(TopicPartition(name, p)).maintain(
                        now, spec.cleanup_policy, spec.retention_ms, spec.retention_bytes, self.delete_retention_ms
                    )
            except TopicNotFound:
                continue

    def close(self) -> None:
        with self._lock:
            for part in self._partitions.values():
                part.close()
            self._partitions.clear()


def _validate_group(group: str) -> None:
    if not group or "/" in group or group.startswith(".") or "\x00" in group:
        raise LogError(f"invalid consumer group name {group!r}: use letters, digits, '.', '_' and '-'")


class _DiskSource:
    def __init__(self, log: EmbeddedLog) -> None:
        self._log = log

    def partitions_of(self, topic: str) -> int:
        return self._log.spec(topic).partitions

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return self._log.partition(tp).bounds()

    def read(self, tp: TopicPartition, offset: int, max_records: int) -> list[Record]:
        return self._log.partition(tp).read(offset, max_records)

    def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int:
        return self._log.partition(tp).offset_for_time(timestamp_ms)

    def wait(
        self, partitions: Iterable[TopicPartition], positions: Mapping[TopicPartition, int], timeout: float
    ) -> None:
        import time

        deadline = time.monotonic() + timeout
        parts = [(self._log.partition(tp), positions.get(tp, 0)) for tp in partitions]
        delay = 0.0002
        while True:
            for part, position in parts:
                try:
                    if part.watermark().end_offset > position:
                        return
                except (FileNotFoundError, OSError):
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 0.005)


class _FileCoordinator:
    """Group state in ``groups/<group>.json``, every change under an exclusive lock of ``<group>.lock``."""

    def __init__(self, log: EmbeddedLog) -> None:
        self._log = log
        self._dir = log._groups_dir

    @contextmanager
    def _state(self, group: str, write: bool = True) -> Iterator[GroupState]:
        fd = os.open(self._dir / f"{group}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            path = self._dir / f"{group}.json"
            try:
                state = GroupState.from_dict(json.loads(path.read_text()))
            except FileNotFoundError:
                state = GroupState()
            except ValueError as exc:
                raise LogError(f"group state {path} is damaged ({exc}); delete it to reset the group") from exc
            before = state.to_dict()
            yield state
            if write and not state.members and not state.offsets:
                # An empty group that never committed is no group at all (Kafka drops such groups too):
                # nothing is left behind by short-lived readers such as model watchers.
                path.unlink(missing_ok=True)
            elif write and state.to_dict() != before:
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(state.to_dict()))
                os.replace(tmp, path)
        finally:
            os.close(fd)

    def _partitions_of(self, topic: str) -> int:
        return self._log.spec(topic, refresh=True).partitions

    def heartbeat(
        self, group: str, member_id: str, topics: Sequence[str], session_timeout_ms: int, client_id: str
    ) -> Membership:
        with self._state(group) as state:
            apply_heartbeat(state, member_id, topics, session_timeout_ms, client_id, self._partitions_of, now_ms())
            return Membership(state.generation, frozenset(state.assignment.get(member_id, ())))

    def leave(self, group: str, member_id: str) -> None:
        with self._state(group) as state:
            if state.members.pop(member_id, None) is not None:
                state.assignment.pop(member_id, None)
                rebalance(state, self._partitions_of)

    def commit(self, group: str, member_id: str, generation: int, offsets: Mapping[TopicPartition, int]) -> None:
        with self._state(group) as state:
            check_commit(state, member_id, generation, offsets)
            state.offsets.update(offsets)

    def committed(self, group: str) -> dict[TopicPartition, int]:
        with self._state(group, write=False) as state:
            return dict(state.offsets)

    def subscribed_topics(self, group: str) -> set[str]:
        with self._state(group, write=False) as state:
            return {t for m in state.members.values() for t in m.topics}


def build(uri: str, *, config: Any = None, **kwargs: Any) -> EmbeddedLog:
    """``embedded:`` → ``<home>/log``; ``embedded:/path``, ``file:/path`` or a bare path → that directory."""
    rest = uri.split(":", 1)[1].removeprefix("//") if uri.startswith(("embedded:", "file:")) else uri
    if rest:
        root = Path(rest).expanduser()
    elif config is not None:
        root = Path(config.home) / "log"
    else:
        raise ConfigError("embedded: needs a configuration (for the Kawa home) or a path, e.g. embedded:/tmp/log")
    options: dict[str, Any] = {}
    if config is not None:
        options = {
            "fsync": config.log.fsync,
            "segment_bytes": config.log.segment_bytes,
            "max_record_bytes": config.log.max_record_bytes,
        }
    options.update(kwargs)
    return EmbeddedLog(root, uri=uri, **options)
