"""The embedded log's on-disk record format.

A partition is a directory of segment files named by the offset of their first record
(``00000000000000000000.log``) plus a ``hwm`` file. A segment is a sequence of frames::

    u32 body_length | u32 crc32(body) | body
    body = i64 offset | i64 timestamp_ms | i32 key_length (-1: null) | i32 value_length (-1: null)
           | u16 header_count | key | value | (u16 name_length | u32 value_length | name | value)*

The ``hwm`` file (high watermark) says how far the partition is acknowledged: the next offset, the active
segment's base and its acknowledged size, and an epoch bumped whenever bytes move (compaction, truncation,
retention) so readers drop cached byte positions. Readers never read past it.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from kawa.errors import CorruptLog
from kawa.log.base import Record

FRAME = struct.Struct("<II")
BODY = struct.Struct("<qqiiH")
HEADER = struct.Struct("<HI")
HWM = struct.Struct("<qqqqI")
SEGMENT_SUFFIX = ".log"


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def encode(
    offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...]
) -> bytes:
    parts = [
        BODY.pack(
            offset,
            timestamp_ms,
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            len(headers),
        )
    ]
    if key:
        parts.append(key)
    if value:
        parts.append(value)
    for name, hvalue in headers:
        raw = name.encode()
        parts.append(HEADER.pack(len(raw), len(hvalue)))
        parts.append(raw)
        parts.append(hvalue)
    body = b"".join(parts)
    return FRAME.pack(len(body), zlib.crc32(body)) + body


@dataclass(frozen=True)
class Frame:
    record: Record
    start: int  # byte position of the frame
    end: int  # byte position after it


def decode_frames(
    buf: bytes | memoryview, base_pos: int, topic: str, partition: int, limit: int | None = None
) -> tuple[list[Record], int]:
    """Decode whole frames from ``buf`` (which starts at file position ``base_pos``).

    Returns the records and the number of bytes consumed; stops at the first incomplete frame. A complete
    frame with a wrong checksum raises :class:`CorruptLog`.
    """
    records: list[Record] = []
    pos = 0
    size = len(buf)
    unpack_frame = FRAME.unpack_from
    unpack_body = BODY.unpack_from
    view = memoryview(buf)
    crc32 = zlib.crc32
    while pos + 8 <= size and (limit is None or len(records) < limit):
        length, crc = unpack_frame(view, pos)
        end = pos + 8 + length
        if end > size:
            break
        body = view[pos + 8 : end]
        if crc32(body) != crc:
            raise CorruptLog(
                f"{topic}[{partition}]: checksum mismatch in the frame at byte {base_pos + pos}; the segment "
                "is damaged — restore it from a backup or delete the topic"
            )
        offset, ts, klen, vlen, nh = unpack_body(body, 0)
        p = BODY.size
        key = None
        if klen >= 0:
            key = bytes(body[p : p + klen])
            p += klen
        value = None
        if vlen >= 0:
            value = bytes(body[p : p + vlen])
            p += vlen
        headers: tuple[tuple[str, bytes], ...] = ()
        if nh:
            hs = []
            for _ in range(nh):
                nlen, hlen = HEADER.unpack_from(body, p)
                p += HEADER.size
                name = bytes(body[p : p + nlen]).decode()
                p += nlen
                hs.append((name, bytes(body[p : p + hlen])))
                p += hlen
            headers = tuple(hs)
        records.append(Record(topic, partition, offset, key, value, headers, ts))
        pos = end
    return records, pos


def scan_whole(path: str, start: int, topic: str, partition: int) -> tuple[list[tuple[int, int]], int]:
    """Walk frames of a segment from byte ``start``: ``([(offset, end_pos), …], last_good_pos)``.

    Stops at a torn or damaged frame; the caller decides whether to truncate there.
    """
    out: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    pos = 0
    while pos + 8 <= len(data):
        length, crc = FRAME.unpack_from(data, pos)
        end = pos + 8 + length
        if end > len(data) or length < BODY.size or zlib.crc32(data[pos + 8 : end]) != crc:
            break
        offset = BODY.unpack_from(data, pos + 8)[0]
        out.append((offset, start + end))
        pos = end
    return out, start + pos


def iter_segment(path: str, topic: str, partition: int, limit_bytes: int | None = None) -> Iterator[Record]:
    """Every whole record of one segment (up to ``limit_bytes``), in order."""
    with open(path, "rb") as f:
        data = f.read() if limit_bytes is None else f.read(limit_bytes)
    records, _ = decode_frames(data, 0, topic, partition)
    yield from records


@dataclass(frozen=True)
class Watermark:
    end_offset: int
    segment_base: int
    segment_size: int
    epoch: int

    def pack(self) -> bytes:
        raw = struct.pack("<qqqq", self.end_offset, self.segment_base, self.segment_size, self.epoch)
        return raw + struct.pack("<I", zlib.crc32(raw))

    @classmethod
    def unpack(cls, raw: bytes) -> Watermark | None:
        if len(raw) != HWM.size:
            return None
        end, base, size, epoch, crc = HWM.unpack(raw)
        if zlib.crc32(raw[:32]) != crc:
            return None
        return cls(end, base, size, epoch)


def read_watermark(fd: int) -> Watermark:
    """Read a partition's watermark, retrying a read that raced with its writer."""
    for _ in range(100):
        mark = Watermark.unpack(os.pread(fd, HWM.size, 0))
        if mark is not None:
            return mark
    raise CorruptLog("the partition's hwm file is unreadable; delete it to rebuild it from the segments")
