"""Retention and compaction rules shared by the embedded and in-memory logs."""

from __future__ import annotations

from collections.abc import Sequence

from kawa.log.base import Record

DELETE_RETENTION_MS = 24 * 3600 * 1000
"""How long a tombstone survives compaction (Kafka's ``delete.retention.ms`` default)."""


def record_size(record: Record) -> int:
    return 32 + len(record.key or b"") + len(record.value or b"") + sum(len(k) + len(v) + 6 for k, v in record.headers)


def compact_records(
    records: Sequence[Record], now: int, delete_retention_ms: int = DELETE_RETENTION_MS
) -> list[Record]:
    """Keep the last record of each key (in offset order); drop tombstones older than ``delete_retention_ms``.
    Records without a key are kept (the producer refuses them on compacted topics)."""
    last: dict[bytes, int] = {}
    for record in records:
        if record.key is not None:
            last[record.key] = record.offset
    kept: list[Record] = []
    for record in records:
        if record.key is None:
            kept.append(record)
        elif last[record.key] == record.offset:
            if record.value is None and now - record.timestamp_ms > delete_retention_ms:
                continue
            kept.append(record)
    return kept
