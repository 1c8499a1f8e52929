"""The unit a route moves: a :class:`Message` (body + headers + identity), and how bodies become bytes.

A message's identity is ``source`` + ``id`` (as a CloudEvent's): sources give every message a stable id, so
a redelivery after a crash carries the same identity and idempotent sinks (a bucket key, a table's key
column, a file name) or downstream deduplication make it harmless. Derived messages (split parts,
aggregates) get ids derived from their inputs' ids, never random ones.

``tokens`` are the source positions a message stands for (one for a source message, several for an
aggregate): the runner acknowledges them to the source once the message reached the sink or the dead-letter
channel, and only then may the source's durable progress pass them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

Token = Hashable


@dataclass
class Message:
    """One message. ``body`` may be bytes, text, JSON-like data, a pydicom ``Dataset`` or a numpy array."""

    body: Any
    id: str
    source: str
    headers: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    time: datetime | None = None
    tokens: tuple[Token, ...] = ()
    error: str | None = None
    """Set by a source for input it could not decode: the runner dead-letters the message with this reason."""
    error_reason: str | None = None
    """The dead-letter reason code for ``error`` (:mod:`kawa.deadletter`), default ``undecodable``."""

    def derive(
        self, body: Any = None, *, suffix: str | None = None, headers: Mapping[str, Any] | None = None
    ) -> Message:
        """A copy with a new body (and ``headers`` added); ``suffix`` extends the id (``id#suffix``)."""
        return Message(
            body=self.body if body is None else body,
            id=f"{self.id}#{suffix}" if suffix is not None else self.id,
            source=self.source,
            headers={**self.headers, **headers} if headers else dict(self.headers),
            key=self.key,
            time=self.time,
            tokens=self.tokens,
            error=self.error,
            error_reason=self.error_reason,
        )

    @property
    def identity(self) -> str:
        return f"{self.source}\x1f{self.id}"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Compact JSON; datetimes as ISO-8601, decimals as numbers, numpy values as Python ones."""
    return json.dumps(value, separators=(",", ":"), default=_json_default, ensure_ascii=False).encode()


def is_dicom(body: Any) -> bool:
    return type(body).__name__ in ("Dataset", "FileDataset") and type(body).__module__.startswith("pydicom")


def dicom_bytes(ds: Any) -> bytes:
    """A pydicom dataset as a DICOM Part 10 file."""
    from pydicom import dcmwrite

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=bool(getattr(ds, "file_meta", None)))
    return buffer.getvalue()


def to_bytes(body: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """``(bytes, content type)`` of a body for a byte-oriented sink (file, bucket, topic, HTTP)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), content_type or "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), content_type or "text/plain; charset=utf-8"
    if is_dicom(body):
        return dicom_bytes(body), "application/dicom"
    if type(body).__module__ == "numpy" and hasattr(body, "dtype"):
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, body, allow_pickle=False)
        return buffer.getvalue(), "application/x-npy"
    return dumps(body), "application/json"


def guess_extension(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    return {
        "application/json": ".json",
        "application/dicom": ".dcm",
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "text/csv": ".csv",
        "application/vnd.apache.parquet": ".parquet",
        "text/plain": ".txt",
        "application/x-npy": ".npy",
        "application/x-ndjson": ".jsonl",
    }.get(base, ".bin")


def decode_json_body(message: Message) -> Any:
    """The body as JSON-like data: bytes and text are parsed as JSON, anything else is returned as is."""
    body = message.body
    if isinstance(body, bytes | bytearray | memoryview | str):
        from kawa.errors import MessageRejected

        try:
            return json.loads(bytes(body) if not isinstance(body, str) else body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageRejected(f"body is not JSON: {exc}") from exc
    return body
