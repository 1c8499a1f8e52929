"""The object store contract, the same for every backend.

Guarantees every backend gives (tested once, in ``tests/store/test_contract.py``, over every backend):

- **Atomic puts**: a reader sees either the previous object or the whole new one, never a partial write.
  A put is acknowledged (returns) only when the object is stored.
- **Streaming**: ``put`` accepts bytes, a binary file object or an iterator of byte chunks, and ``get``
  returns an :class:`ObjectReader` that is read in chunks. No backend reads a whole object into memory,
  whatever its size.
- **Listing** is in lexicographic (UTF-8 byte) key order; pages are resumed with the returned
  ``continuation_token`` or started after a key with ``start_after``.
- **ETag** is the hex MD5 of the content for objects written in one part (as S3 reports it); S3 multipart
  uploads report S3's ``<md5-of-md5s>-<parts>`` form.
- **Keys** follow :func:`kawa.store.naming.validate_key` and **bucket names** the S3 rules on every backend,
  so data moves between backends unchanged.
- **Notifications**: a change made through the store, or (local backend) a file dropped into a bucket
  directory, is published to the rule's topic at least once as an S3 event record in a CloudEvent; an
  object that exists has had its notification published (see ``docs/store.md``).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kawa.store.rules import NotificationRule

CHUNK = 1024 * 1024

Body = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
"""What ``put`` accepts: bytes, a binary file-like object (anything with ``read``), or byte chunks."""


@dataclass(frozen=True)
class BucketInfo:
    name: str
    created: datetime | None = None


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object.

    ``etag`` has no surrounding quotes. ``content_type`` and ``metadata`` may be ``None``/empty in
    :meth:`ObjectStore.list_objects` results of the S3 backend (S3 lists do not carry them): use ``head``.
    ``sequencer`` grows with every change of one key on the local and memory backends (S3: ``None``).
    """

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None
    version_id: str | None = None
    sequencer: str | None = None


@dataclass(frozen=True)
class ObjectPage:
    """One page of a listing. ``continuation_token`` is set when more keys follow."""

    objects: tuple[ObjectInfo, ...]
    continuation_token: str | None = None

    @property
    def is_truncated(self) -> bool:
        return self.continuation_token is not None


class ObjectReader(io.RawIOBase):
    """A readable binary stream over one object's content, plus its :class:`ObjectInfo`.

    Use it as a context manager; ``read(n)`` returns at most ``n`` bytes, ``iter_chunks()`` yields chunks.
    Closing it releases the file descriptor or HTTP connection.
    """

    def __init__(self, info: ObjectInfo, raw: Any) -> None:
        super().__init__()
        self.info = info
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            # Asked for everything: the caller chose to hold it in memory.
            return b"".join(self.iter_chunks())
        data = self._raw.read(size)
        return bytes(data) if data else b""

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def iter_chunks(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        while True:
            data = self.read(chunk_size)
            if not data:
                return
            yield data

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()

    def __enter__(self) -> ObjectReader:
        return self


def iter_body(body: Body, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The chunks of a ``put`` body, never more than ``chunk_size`` bytes read at once from a stream."""
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body)
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start : start + chunk_size])
        return
    read = getattr(body, "read", None)
    if read is not None:
        while True:
            data = read(chunk_size)
            if not data:
                return
            yield bytes(data)
    for chunk in body:  # type: ignore[union-attr]
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"put body chunks must be bytes, got {type(chunk).__name__}")
        if chunk:
            yield bytes(chunk)


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of objects addressed by key, with notifications. Thread-safe.

    Errors: :class:`~kawa.errors.BucketNotFound`, :class:`~kawa.errors.ObjectNotFound`,
    :class:`~kawa.errors.InvalidKey`, :class:`~kawa.errors.InvalidBucketName`, and for remote backends
    :class:`~kawa.errors.StoreUnavailable` once bounded retries are spent.
    """

    uri: str

    def create_bucket(self, name: str, *, exist_ok: bool = False) -> None:
        """Create a bucket (:class:`~kawa.errors.BucketExists` unless ``exist_ok``)."""
        ...

    def list_buckets(self) -> list[BucketInfo]:
        """Buckets sorted by name."""
        ...

    def bucket_exists(self, name: str) -> bool: ...

    def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket (:class:`~kawa.errors.BucketNotEmpty` otherwise)."""
        ...

    def put(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``body`` under ``key``, replacing any object there, atomically; streams are read in chunks.

        Metadata keys are stored lower-case (as S3 does). Returns the stored object's info.
        """
        ...

    def get(self, bucket: str, key: str) -> ObjectReader:
        """A stream of the object's content (close it, or use ``with``)."""
        ...

    def head(self, bucket: str, key: str) -> ObjectInfo: ...

    def tags(self, bucket: str, key: str) -> dict[str, str]: ...

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        """One page of keys starting with ``prefix``, in key order (at most ``max_keys``, 1-1000)."""
        ...

    def delete(self, bucket: str, key: str, *, missing_ok: bool = False) -> None:
        """Delete an object (:class:`~kawa.errors.ObjectNotFound` when absent unless ``missing_ok``)."""
        ...

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Server-side copy; keeps content type and metadata unless ``metadata`` replaces them."""
        ...

    def add_notification(self, rule: NotificationRule) -> NotificationRule:
        """Store (and, for S3, configure on the server) a notification rule; the bucket must exist.

        A rule with the same id replaces the old one. Applies to changes after it was added: objects
        already in the bucket are not notified. Returns the rule as stored (mode and targets filled in).
        """
        ...

    def notifications(self, bucket: str) -> list[NotificationRule]: ...

    def remove_notification(self, bucket: str, rule_id: str) -> None: ...

    def close(self) -> None: ...


def iter_objects(store: ObjectStore, bucket: str, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, following continuation tokens."""
    token: str | None = None
    while True:
        page = store.list_objects(bucket, prefix=prefix, continuation_token=token, max_keys=page_size)
        yield from page.objects
        if page.continuation_token is None:
            return
        token = page.continuation_token
