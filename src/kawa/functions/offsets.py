"""Which offsets may be committed when invocations finish out of order.

A partition's records are handed out in offset order but finish in any order (concurrency, retries). The
committed offset must never pass a record that has not finished, or a crash would lose it. So the commit
point of a partition is its lowest unfinished offset, or one past the last handed-out offset when every
record has finished. Offsets may have gaps (compaction); only offsets actually handed out count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from kawa.log.base import TopicPartition


class _Partition:
    __slots__ = ("committed", "done", "last", "parts", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # handed out, in order; finished ones are popped from the left
        self.done: set[int] = set()  # finished but not yet at the left end
        self.parts: dict[int, int] = {}  # offsets that stand for several events: finishes still expected
        self.last: int | None = None
        self.committed: int | None = None

    def commit_point(self) -> int | None:
        if self.pending:
            return self.pending[0]
        return None if self.last is None else self.last + 1


class OffsetTracker:
    """Per partition: offsets handed out, offsets finished, and the next offset safe to commit."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` was handed out. Offsets of one partition must arrive increasing."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        if part.last is not None and offset <= part.last:
            raise ValueError(f"{tp}: offset {offset} handed out after {part.last}; reset the partition first")
        part.pending.append(offset)
        part.last = offset

    def expect(self, tp: TopicPartition, offset: int, parts: int) -> None:
        """The handed-out ``offset`` holds ``parts`` events (a notification with several records): it finishes
        when each of them did. ``0`` finishes it now."""
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return
        if parts <= 0:
            part.parts.pop(offset, None)
            self.finish(tp, offset)
        elif parts > 1:
            part.parts[offset] = parts

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """Record that ``offset`` finished (succeeded, was filtered out or was dead-lettered)."""
        part = self._parts.get(tp)
        if part is None:
            return  # the partition was reset (revoked) while the invocation ran
        left = part.parts.get(offset)
        if left is not None:
            if left > 1:
                part.parts[offset] = left - 1
                return
            del part.parts[offset]
        if part.pending and part.pending[0] == offset:
            part.pending.popleft()
            while part.pending and part.pending[0] in part.done:
                part.done.discard(part.pending.popleft())
        elif offset in part.pending:
            part.done.add(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Commit points that moved since they were last marked committed."""
        out: dict[TopicPartition, int] = {}
        for tp, part in self._parts.items():
            point = part.commit_point()
            if point is not None and point != part.committed:
                out[tp] = point
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset

    def last(self, tp: TopicPartition) -> int | None:
        """The last offset handed out for ``tp`` (None when untracked)."""
        part = self._parts.get(tp)
        return None if part is None else part.last

    def unfinished(self, tp: TopicPartition | None = None) -> int:
        parts = self._parts.values() if tp is None else [self._parts[tp]] if tp in self._parts else []
        return sum(len(p.pending) - len(p.done) for p in parts)

    def partitions(self) -> set[TopicPartition]:
        return set(self._parts)

    def reset(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget partitions (revoked in a rebalance): their records will be read again from the commit."""
        for tp in partitions:
            self._parts.pop(tp, None)
