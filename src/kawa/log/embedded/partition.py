"""One partition of the embedded log: appends under a file lock, lock-free reads up to the watermark.

Multi-process safety: every append takes an exclusive ``flock`` on the partition's lock file, re-reads the
watermark, repairs a torn tail a crashed writer left (whole records are kept, a partial frame is truncated
with a warning), writes the batch with one ``write`` and then advances the watermark. Readers take no lock:
they read whole frames up to the watermark, so they never see a half-written or unacknowledged record.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from kawa.errors import CorruptLog, TopicNotFound
from kawa.log.base import Record
from kawa.log.embedded.segment import (
    SEGMENT_SUFFIX,
    Watermark,
    decode_frames,
    encode,
    iter_segment,
    read_watermark,
    scan_whole,
    segment_name,
)
from kawa.log.retention import compact_records

log = logging.getLogger("kawa.log.embedded")

Pending = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]
READ_CHUNK = 1 << 20


class Partition:
    """Reader and writer of one partition directory, shared by everything in one process."""

    def __init__(self, path: Path, topic: str, number: int, fsync: str = "never") -> None:
        self.path = path
        self.topic = topic
        self.number = number
        self.fsync = fsync
        self._mutex = threading.Lock()
        try:
            self._lock_fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._hwm_fd = os.open(path / "hwm", os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise TopicNotFound(f"topic {topic!r} does not exist (partition directory {path} is missing)") from None
        self._segments: list[int] = []
        self._fds: dict[int, int] = {}
        self._epoch = -1
        self._cursor: tuple[int, int, int] | None = None  # (offset, segment base, byte position)
        self._write_fd: int | None = None
        self._write_base = -1
        if os.fstat(self._hwm_fd).st_size == 0:
            with self._locked():
                if os.fstat(self._hwm_fd).st_size == 0:
                    self._rebuild_watermark()

    # --- locking & watermark ----------------------------------------------------------------------

    def _locked(self) -> _FileLock:
        return _FileLock(self._lock_fd)

    def watermark(self) -> Watermark:
        try:
            return read_watermark(self._hwm_fd)
        except CorruptLog:
            with self._mutex, self._locked():
                return self._rebuild_watermark()

    def _write_watermark(self, mark: Watermark) -> None:
        os.pwrite(self._hwm_fd, mark.pack(), 0)
        if self.fsync != "never":
            os.fsync(self._hwm_fd)

    def _rebuild_watermark(self, epoch: int = 0) -> Watermark:
        """Under the lock: derive the watermark from the segments (first start, or a lost hwm file)."""
        bases = self._list_segments()
        if not bases:
            (self.path / segment_name(0)).touch()
            bases = [0]
        last = bases[-1]
        seg = str(self.path / segment_name(last))
        frames, good = scan_whole(seg, 0, self.topic, self.number)
        self._truncate_tail(seg, good)
        end = frames[-1][0] + 1 if frames else last
        mark = Watermark(end, last, good, epoch + 1)
        self._write_watermark(mark)
        return mark

    def _truncate_tail(self, seg: str, good: int) -> None:
        size = os.path.getsize(seg)
        if size > good:
            log.warning(
                "%s[%d]: truncating a torn tail of %d bytes in %s (a writer crashed mid-record; the record "
                "was never acknowledged)",
                self.topic,
                self.number,
                size - good,
                os.path.basename(seg),
            )
            os.truncate(seg, good)

    # --- writing ----------------------------------------------------------------------------------

    def append(self, batch: Sequence[Pending], segment_bytes: int) -> int:
        """Append ``batch`` and return the offset of its first record."""
        with self._mutex, self._locked():
            mark = self.watermark()
            mark = self._repair(mark)
            if mark.segment_size >= segment_bytes and mark.end_offset > mark.segment_base:
                base = mark.end_offset
                (self.path / segment_name(base)).touch()
                mark = Watermark(base, base, 0, mark.epoch)
            if self._write_base != mark.segment_base:
                if self._write_fd is not None:
                    os.close(self._write_fd)
                try:
                    self._write_fd = os.open(self.path / segment_name(mark.segment_base), os.O_WRONLY)
                except FileNotFoundError:
                    raise TopicNotFound(f"topic {self.topic!r} was deleted") from None
                self._write_base = mark.segment_base
            first = mark.end_offset
            data = b"".join(
                encode(first + i, ts, key, value, headers) for i, (key, value, headers, ts) in enumerate(batch)
            )
            assert self._write_fd is not None
            written = 0
            view = memoryview(data)
            while written < len(data):
                written += os.pwrite(self._write_fd, view[written:], mark.segment_size + written)
            if self.fsync != "never":
                os.fsync(self._write_fd)
            self._write_watermark(
                Watermark(first + len(batch), mark.segment_base, mark.segment_size + len(data), mark.epoch)
            )
            return first

    def _repair(self, mark: Watermark) -> Watermark:
        """Under the lock: reconcile the active segment's real size with the watermark."""
        seg = str(self.path / segment_name(mark.segment_base))
        try:
            size = os.path.getsize(seg)
        except FileNotFoundError:
            if not self.path.exists():
                raise TopicNotFound(f"topic {self.topic!r} was deleted") from None
            return self._rebuild_watermark(mark.epoch)
        if size == mark.segment_size:
            return mark
        if size < mark.segment_size:
            log.warning("%s[%d]: active segment shorter than its watermark; rebuilding", self.topic, self.number)
            return self._rebuild_watermark(mark.epoch)
        # Bytes past the watermark: a writer died between writing and acknowledging.
        frames, good = scan_whole(seg, mark.segment_size, self.topic, self.number)
        frames = [f for f in frames if f[0] >= mark.end_offset]
        self._truncate_tail(seg, good)
        end = frames[-1][0] + 1 if frames else mark.end_offset
        repaired = Watermark(end, mark.segment_base, good, mark.epoch + 1)
        self._write_watermark(repaired)
        return repaired

    # --- reading ----------------------------------------------------------------------------------

    def _list_segments(self) -> list[int]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            raise TopicNotFound(f"topic {self.topic!r} does not exist") from None
        return sorted(int(n[: -len(SEGMENT_SUFFIX)]) for n in names if n.endswith(SEGMENT_SUFFIX) and n[0] != ".")

    def _reset_cache(self, epoch: int) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._cursor = None
        self._segments = self._list_segments()
        self._epoch = epoch

    def _fd(self, base: int) -> int:
        fd = self._fds.get(base)
        if fd is None:
            fd = os.open(self.path / segment_name(base), os.O_RDONLY)
            self._fds[base] = fd
        return fd

    def bounds(self) -> tuple[int, int]:
        mark = self.watermark()
        with self._mutex:
            if mark.epoch != self._epoch:
                self._reset_cache(mark.epoch)
            segments = self._segments or self._list_segments()
            start = segments[0] if segments else mark.end_offset
        return min(start, mark.end_offset), mark.end_offset

    def read(self, offset: int, max_records: int) -> list[Record]:
        """Up to ``max_records`` acknowledged records with offsets >= ``offset``."""
        with self._mutex:
            for _attempt in range(3):
                try:
                    return self._read(offset, max_records)
                except FileNotFoundError:  # retention or compaction replaced a segment under us
                    self._reset_cache(self._epoch)
            return self._read(offset, max_records)

    def _read(self, offset: int, max_records: int) -> list[Record]:
        mark = self.watermark()
        if mark.epoch != self._epoch:
            self._reset_cache(mark.epoch)
        if offset >= mark.end_offset or max_records <= 0:
            return []
        if self._cursor is not None and self._cursor[0] == offset:
            _, base, pos = self._cursor
        else:
            if not self._segments or (offset >= self._segments[-1] and self._segments[-1] != mark.segment_base):
                self._segments = self._list_segments()
            index = max(0, bisect.bisect_right(self._segments, offset) - 1)
            base, pos = self._segments[index], 0
        out: list[Record] = []
        while len(out) < max_records:
            limit = mark.segment_size if base == mark.segment_base else os.fstat(self._fd(base)).st_size
            if pos >= limit:
                if base == mark.segment_base:
                    break
                later = [b for b in self._segments if b > base]
                if not later:
                    self._segments = self._list_segments()
                    later = [b for b in self._segments if b > base]
                    if not later:
                        break
                base, pos = later[0], 0
                continue
            chunk = os.pread(self._fd(base), min(READ_CHUNK, limit - pos), pos)
            records, used = decode_frames(chunk, pos, self.topic, self.number, max_records - len(out) + 64)
            if used == 0:
                # One frame larger than the chunk: read exactly that frame.
                length = int.from_bytes(chunk[:4], "little")
                chunk = os.pread(self._fd(base), 8 + length, pos)
                records, used = decode_frames(chunk, pos, self.topic, self.number)
                if used == 0:
                    raise CorruptLog(f"{self.topic}[{self.number}]: unreadable frame at byte {pos} of segment {base}")
            consumed = 0
            for record in records:
                consumed += 1
                if record.offset >= offset and record.offset < mark.end_offset:
                    out.append(record)
                    if len(out) >= max_records:
                        break
            if consumed < len(records):
                # Stopped early: advance the byte position only past the records taken.
                pos = self._position_after(chunk, pos, consumed)
            else:
                pos += used
        next_offset = out[-1].offset + 1 if out else offset
        self._cursor = (next_offset, base, pos)
        return out

    @staticmethod
    def _position_after(chunk: bytes, pos: int, count: int) -> int:
        p = 0
        for _ in range(count):
            p += 8 + int.from_bytes(chunk[p : p + 4], "little")
        return pos + p

    def offset_for_time(self, timestamp_ms: int) -> int:
        mark = self.watermark()
        for base in self._list_segments():
            limit = mark.segment_size if base == mark.segment_base else None
            for record in iter_segment(str(self.path / segment_name(base)), self.topic, self.number, limit):
                if record.timestamp_ms >= timestamp_ms and record.offset < mark.end_offset:
                    return record.offset
        return mark.end_offset

    # --- retention & compaction -------------------------------------------------------------------

    def maintain(
        self,
        now: int,
        cleanup_policy: str,
        retention_ms: int | None,
        retention_bytes: int | None,
        delete_retention_ms: int,
    ) -> None:
        """Apply compaction and retention under the partition lock. The active segment is never deleted."""
        with self._mutex, self._locked():
            mark = self._repair(self.watermark())
            changed = False
            if "compact" in cleanup_policy:
                changed |= self._compact(mark, now, delete_retention_ms)
                mark = self.watermark()
            if "delete" in cleanup_policy:
                changed |= self._apply_retention(mark, now, retention_ms, retention_bytes)
            if changed:
                mark = self.watermark()
                self._write_watermark(Watermark(mark.end_offset, mark.segment_base, mark.segment_size, mark.epoch + 1))

    def _apply_retention(
        self, mark: Watermark, now: int, retention_ms: int | None, retention_bytes: int | None
    ) -> bool:
        closed = [b for b in self._list_segments() if b < mark.segment_base]
        sizes = {b: os.path.getsize(self.path / segment_name(b)) for b in closed}
        total = sum(sizes.values()) + mark.segment_size
        deleted = False
        for base in closed:
            path = self.path / segment_name(base)
            too_old = False
            if retention_ms is not None:
                newest = max((r.timestamp_ms for r in iter_segment(str(path), self.topic, self.number)), default=0)
                too_old = now - newest > retention_ms
            too_big = retention_bytes is not None and total > retention_bytes
            if not (too_old or too_big):
                break
            os.unlink(path)
            total -= sizes[base]
            deleted = True
        return deleted

    def _compact(self, mark: Watermark, now: int, delete_retention_ms: int) -> bool:
        bases = self._list_segments()
        per_segment: dict[int, list[Record]] = {}
        everything: list[Record] = []
        for base in bases:
            limit = mark.segment_size if base == mark.segment_base else None
            records = list(iter_segment(str(self.path / segment_name(base)), self.topic, self.number, limit))
            per_segment[base] = records
            everything.extend(records)
        kept = {r.offset for r in compact_records(everything, now, delete_retention_ms)}
        if len(kept) == len(everything):
            return False
        new_active_size = mark.segment_size
        for base, records in per_segment.items():
            survivors = [r for r in records if r.offset in kept]
            if len(survivors) == len(records):
                continue
            path = self.path / segment_name(base)
            if not survivors and base != mark.segment_base:
                os.unlink(path)
                continue
            data = b"".join(encode(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in survivors)
            tmp = self.path / f".{segment_name(base)}.compact"
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync != "never":
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if base == mark.segment_base:
                new_active_size = len(data)
                self._write_base = -1  # reopen: the inode changed
        self._write_watermark(Watermark(mark.end_offset, mark.segment_base, new_active_size, mark.epoch + 1))
        return True

    def close(self) -> None:
        with self._mutex:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
            for fd in (self._lock_fd, self._hwm_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
