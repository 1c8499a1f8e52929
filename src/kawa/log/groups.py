"""Consumer groups shared by the embedded and in-memory logs.

A :class:`Coordinator` keeps each group's members, generation, assignment and committed offsets; the
backend decides where that state lives (a locked file, a dict). :class:`GroupConsumer` is the one consumer
implementation on top of a coordinator and a :class:`PartitionSource` (how records are read).

Membership: a member joins with its first heartbeat and stays while it heartbeats within its session
timeout (a background thread does that, as Kafka's clients do). Any join, leave or expiry bumps the
generation and recomputes the assignment (round-robin over the sorted partitions of the subscribed
topics, members sorted by id). A commit is accepted only from the member that owns the partition in the
current generation, which fences a member that lost its partitions in a rebalance it has not seen yet.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kawa.errors import CommitFailed, InvalidPartition, LogError, TopicNotFound
from kawa.log.base import OffsetReset, PartitionLag, Record, TopicPartition

log = logging.getLogger("kawa.log.groups")

DEFAULT_SESSION_TIMEOUT_MS = 10_000


@dataclass
class Member:
    topics: list[str]
    session_timeout_ms: int
    last_heartbeat_ms: int
    client_id: str = ""


@dataclass
class GroupState:
    """Everything a coordinator stores for one group (JSON-serializable through to_dict/from_dict)."""

    generation: int = 0
    members: dict[str, Member] = field(default_factory=dict)
    assignment: dict[str, list[TopicPartition]] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "members": {
                mid: {
                    "topics": m.topics,
                    "session_timeout_ms": m.session_timeout_ms,
                    "last_heartbeat_ms": m.last_heartbeat_ms,
                    "client_id": m.client_id,
                }
                for mid, m in self.members.items()
            },
            "assignment": {mid: [[tp.topic, tp.partition] for tp in tps] for mid, tps in self.assignment.items()},
            "offsets": [[tp.topic, tp.partition, off] for tp, off in sorted(self.offsets.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupState:
        return cls(
            generation=int(data.get("generation", 0)),
            members={mid: Member(**m) for mid, m in data.get("members", {}).items()},
            assignment={
                mid: [TopicPartition(t, int(p)) for t, p in tps] for mid, tps in data.get("assignment", {}).items()
            },
            offsets={TopicPartition(t, int(p)): int(o) for t, p, o in data.get("offsets", [])},
        )


@dataclass(frozen=True)
class Membership:
    generation: int
    partitions: frozenset[TopicPartition]


def assign_round_robin(
    members: Mapping[str, Sequence[str]], partitions_of: Callable[[str], int]
) -> dict[str, list[TopicPartition]]:
    """Kafka's RoundRobinAssignor: all subscribed partitions, sorted, dealt to the sorted members that
    subscribe to each partition's topic."""
    result: dict[str, list[TopicPartition]] = {mid: [] for mid in members}
    ordered = sorted(members)
    topics = sorted({t for ts in members.values() for t in ts})
    index = 0
    for topic in topics:
        try:
            count = partitions_of(topic)
        except TopicNotFound:
            continue
        for partition in range(count):
            for _ in range(len(ordered)):
                mid = ordered[index % len(ordered)]
                index += 1
                if topic in members[mid]:
                    result[mid].append(TopicPartition(topic, partition))
                    break
    return result


def apply_heartbeat(
    state: GroupState,
    member_id: str,
    topics: Sequence[str],
    session_timeout_ms: int,
    client_id: str,
    partitions_of: Callable[[str], int],
    now: int,
) -> bool:
    """Record a heartbeat, expire dead members and rebalance if membership changed. True if changed."""
    changed = False
    member = state.members.get(member_id)
    if member is None or member.topics != list(topics):
        changed = True
    state.members[member_id] = Member(list(topics), session_timeout_ms, now, client_id)
    for mid, m in list(state.members.items()):
        if mid != member_id and now - m.last_heartbeat_ms > m.session_timeout_ms:
            log.info("group member %s expired (no heartbeat for %d ms)", mid, now - m.last_heartbeat_ms)
            del state.members[mid]
            changed = True
    if changed:
        rebalance(state, partitions_of)
    else:
        # Partitions may have been added to a subscribed topic.
        fresh = assign_round_robin({m: v.topics for m, v in state.members.items()}, partitions_of)
        if fresh != state.assignment:
            state.assignment = fresh
            state.generation += 1
            changed = True
    return changed


def rebalance(state: GroupState, partitions_of: Callable[[str], int]) -> None:
    state.generation += 1
    state.assignment = assign_round_robin({m: v.topics for m, v in state.members.items()}, partitions_of)


def check_commit(state: GroupState, member_id: str, generation: int, offsets: Mapping[TopicPartition, int]) -> None:
    owned = set(state.assignment.get(member_id, ()))
    if member_id not in state.members:
        raise CommitFailed(
            "commit refused: this consumer was removed from the group (no heartbeat within its session "
            "timeout); poll again to rejoin — records after the last commit will be delivered again"
        )
    for tp in offsets:
        if tp not in owned:
            raise CommitFailed(
                f"commit refused for {tp.topic}[{tp.partition}]: the group rebalanced (generation "
                f"{generation} → {state.generation}) and the partition now belongs to another member"
            )


class Coordinator(Protocol):
    """Where a backend keeps group state. Every method is atomic with respect to other processes."""

    def heartbeat(
        self, group: str, member_id: str, topics: Sequence[str], session_timeout_ms: int, client_id: str
    ) -> Membership: ...

    def leave(self, group: str, member_id: str) -> None: ...

    def commit(self, group: str, member_id: str, generation: int, offsets: Mapping[TopicPartition, int]) -> None: ...

    def committed(self, group: str) -> dict[TopicPartition, int]: ...

    def subscribed_topics(self, group: str) -> set[str]: ...


class PartitionSource(Protocol):
    """How a consumer reads partitions of one backend."""

    def partitions_of(self, topic: str) -> int: ...

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        """(start offset, end offset) of the partition."""
        ...

    def read(self, tp: TopicPartition, offset: int, max_records: int) -> list[Record]:
        """Records at offsets >= ``offset`` (the first may be later after compaction/retention)."""
        ...

    def offset_for_time(self, tp: TopicPartition, timestamp_ms: int) -> int: ...

    def wait(
        self, partitions: Iterable[TopicPartition], positions: Mapping[TopicPartition, int], timeout: float
    ) -> None:
        """Block until one of ``partitions`` may have records at/after its position, or ``timeout``."""
        ...


def compute_lag(
    committed: Mapping[TopicPartition, int],
    subscribed: Iterable[str],
    source: PartitionSource,
    topics: Sequence[str] | None,
) -> list[PartitionLag]:
    wanted = set(topics) if topics else set(subscribed) | {tp.topic for tp in committed}
    rows: list[PartitionLag] = []
    for topic in sorted(wanted):
        try:
            count = source.partitions_of(topic)
        except TopicNotFound:
            if topics:
                raise
            continue
        for partition in range(count):
            tp = TopicPartition(topic, partition)
            start, end = source.bounds(tp)
            done = committed.get(tp)
            lag = end - (done if done is not None else start)
            rows.append(PartitionLag(topic, partition, done, end, max(0, lag)))
    return rows


class GroupConsumer:
    """The consumer of the embedded and in-memory logs (see :class:`kawa.log.base.Consumer`)."""

    def __init__(
        self,
        group: str,
        topics: Sequence[str],
        coordinator: Coordinator,
        source: PartitionSource,
        *,
        auto_offset_reset: OffsetReset = "earliest",
        session_timeout_ms: int | None = None,
        client_id: str | None = None,
    ) -> None:
        for topic in topics:
            source.partitions_of(topic)  # raises TopicNotFound
        self.group = group
        self._topics = list(topics)
        self._coordinator = coordinator
        self._source = source
        self._reset = auto_offset_reset
        self._session_timeout_ms = session_timeout_ms or DEFAULT_SESSION_TIMEOUT_MS
        self._client_id = client_id or ""
        self.member_id = f"{client_id or 'kawa'}-{uuid.uuid4().hex[:12]}"
        self._membership = Membership(-1, frozenset())
        self._applied_generation = -1
        self._positions: dict[TopicPartition, int] = {}
        self._pending_seeks: dict[TopicPartition, int | str] = {}
        self._rotation = 0
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat()
        interval = max(0.05, min(1.0, self._session_timeout_ms / 5000))
        self._heartbeats = threading.Thread(
            target=self._heartbeat_loop, args=(interval,), name=f"kawa-heartbeat-{group}", daemon=True
        )
        self._heartbeats.start()

    # --- membership -------------------------------------------------------------------------------

    def _beat(self) -> None:
        membership = self._coordinator.heartbeat(
            self.group, self.member_id, self._topics, self._session_timeout_ms, self._client_id
        )
        with self._lock:
            self._membership = membership

    def _heartbeat_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._beat()
            except Exception:  # the next beat retries; expiry handles a member that cannot beat
                log.warning("heartbeat of %s in group %s failed", self.member_id, self.group, exc_info=True)

    def _sync_assignment(self) -> None:
        with self._lock:
            membership = self._membership
        if membership.generation == self._applied_generation and membership.partitions == self._positions.keys():
            # Compare the partitions too: a group whose state was dropped (empty, never committed) restarts
            # its generations, so a returning member may see a number it has already applied.
            return
        self._applied_generation = membership.generation
        committed: dict[TopicPartition, int] | None = None
        new_positions: dict[TopicPartition, int] = {}
        for tp in sorted(membership.partitions):
            if tp in self._positions:
                new_positions[tp] = self._positions[tp]
                continue
            if committed is None:
                committed = self._coordinator.committed(self.group)
            if tp in committed:
                new_positions[tp] = committed[tp]
            else:
                start, end = self._source.bounds(tp)
                new_positions[tp] = start if self._reset == "earliest" else end
        self._positions = new_positions
        for tp, target in list(self._pending_seeks.items()):
            if tp in self._positions:
                self._apply_seek(tp, target)
                del self._pending_seeks[tp]

    # --- the Consumer contract --------------------------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        self._sync_assignment()
        return set(self._positions)

    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[Record]:
        self._check_open()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self._sync_assignment()
            if max_records <= 0:
                return []
            records = self._read_some(max_records)
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self._positions:
                self._source.wait(list(self._positions), self._positions, min(remaining, 0.05))
            else:
                time.sleep(min(remaining, 0.02))

    def _read_some(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        tps = sorted(self._positions)
        if not tps:
            return out
        self._rotation = (self._rotation + 1) % len(tps)
        for tp in tps[self._rotation :] + tps[: self._rotation]:
            want = max_records - len(out)
            if want <= 0:
                break
            position = self._positions[tp]
            try:
                batch = self._source.read(tp, position, want)
            except TopicNotFound:
                continue
            if not batch:
                start, _end = self._source.bounds(tp)
                if position < start:  # retention removed what we were about to read
                    log.warning(
                        "%s[%d]: offset %d is gone, moving to log start %d", tp.topic, tp.partition, position, start
                    )
                    self._positions[tp] = start
                continue
            out.extend(batch)
            self._positions[tp] = batch[-1].offset + 1
        return out

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._check_open()
        self._sync_assignment()
        to_commit = dict(self._positions if offsets is None else offsets)
        if not to_commit:
            return
        self._coordinator.commit(self.group, self.member_id, self._applied_generation, to_commit)

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        stored = self._coordinator.committed(self.group)
        return {tp: stored.get(tp) for tp in partitions}

    def position(self, tp: TopicPartition) -> int:
        self._sync_assignment()
        if tp not in self._positions:
            raise InvalidPartition(f"{tp.topic}[{tp.partition}] is not assigned to this consumer")
        return self._positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._seek(tp, offset)

    def seek_to_beginning(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for tp in self._targets(partitions):
            self._seek(tp, "beginning")

    def seek_to_end(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        for tp in self._targets(partitions):
            self._seek(tp, "end")

    def seek_to_time(self, timestamp_ms: int, partitions: Iterable[TopicPartition] | None = None) -> None:
        for tp in self._targets(partitions):
            self._seek(tp, self._source.offset_for_time(tp, timestamp_ms))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._heartbeats.join(timeout=5)
        try:
            self._coordinator.leave(self.group, self.member_id)
        except Exception:
            log.warning("leaving group %s failed; the member expires after its session timeout", self.group)

    def __enter__(self) -> GroupConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------------------------------

    def _targets(self, partitions: Iterable[TopicPartition] | None) -> list[TopicPartition]:
        self._sync_assignment()
        return list(self._positions) if partitions is None else list(partitions)

    def _seek(self, tp: TopicPartition, target: int | str) -> None:
        self._check_open()
        self._sync_assignment()
        count = self._source.partitions_of(tp.topic)
        if not 0 <= tp.partition < count:
            raise InvalidPartition(f"{tp.topic} has partitions 0..{count - 1}, not {tp.partition}")
        if tp in self._positions:
            self._apply_seek(tp, target)
        else:  # applied when the partition is assigned, like Kafka's seek before assignment settles
            self._pending_seeks[tp] = target

    def _apply_seek(self, tp: TopicPartition, target: int | str) -> None:
        start, end = self._source.bounds(tp)
        if target == "beginning":
            self._positions[tp] = start
        elif target == "end":
            self._positions[tp] = end
        else:
            assert isinstance(target, int)
            if target < 0:
                raise InvalidPartition(f"cannot seek {tp.topic}[{tp.partition}] to negative offset {target}")
            if start <= target <= end:
                self._positions[tp] = target
            else:  # out of range: the reset policy decides, as Kafka's fetcher does
                self._positions[tp] = start if self._reset == "earliest" else end

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("this consumer is closed; create a new one")
