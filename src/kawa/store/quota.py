"""The ``storage_bytes`` quota: how many bytes a project's buckets may hold.

A pure rule (:func:`admit`, :func:`refusal`) and :class:`QuotaStore`, the thin wrapper every store that
:func:`kawa.backends.open_backends` opens is given. A bucket belongs to the registered project its name is
prefixed with (``P--name``, :func:`~kawa.projects.core.bucket_project`), else to ``default`` (no limit until an
admin sets one). For a project with no limit a call passes straight through.

For a project with a limit:

- a ``put`` of bytes is checked before anything is sent; a streamed ``put`` is counted chunk by chunk and
  stops with :class:`~kawa.errors.StorageQuotaExceeded` at the first chunk past the limit, so the (atomic)
  put stores nothing; a ``copy`` is checked by its source's size. Replacing an object counts only what it grows.
- bytes that puts in flight will add are reserved, so concurrent puts in one process never go over together;
- what the project holds is measured by listing its buckets when first needed, every ``refresh_s`` after
  that, and again before any refusal, so an object deleted elsewhere or a raised quota counts at once.

Across processes the limit holds up to what the others wrote since this one last measured (at most
``refresh_s`` ago): the same trade S3 servers make (Ceph RGW enforces its quotas from cached stats).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.errors import KawaError, ObjectNotFound, StorageQuotaExceeded
from kawa.projects.core import DEFAULT_PROJECT, bucket_project
from kawa.store.base import Body, ObjectInfo, ObjectStore, iter_body, iter_objects

if TYPE_CHECKING:
    from kawa.config import KawaConfig

__all__ = ["QuotaStore", "StorageLimits", "admit", "measure", "refusal", "with_storage_quota"]

REFRESH_S = 60.0
log = logging.getLogger("kawa.store.quota")


@dataclass(frozen=True)
class StorageLimits:
    """Each registered project's ``storage_bytes`` limit (``None``: no limit); ``default`` is always known."""

    limits: Mapping[str, int | None] = field(default_factory=dict)

    def project_of(self, bucket: str) -> str:
        return bucket_project(bucket, self.limits)

    def limit(self, project: str) -> int | None:
        return self.limits.get(project)


def admit(limit: int | None, held: int, reserved: int, grow: int) -> bool:
    """Whether a write that grows a project by ``grow`` bytes fits, beside ``held`` stored and ``reserved`` in
    flight; shrinking or keeping the size always fits."""
    return limit is None or grow <= 0 or held + reserved + grow <= limit


def size_text(n: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{n / scale:,.3g} {unit}"
    return f"{n:,.0f} bytes"


def refusal(project: str, limit: int, held: int, grow: int, where: str) -> str:
    """Kawa's words for a write the quota refuses: the quota, its use, and what to do. ``where`` names the write
    (and may end with "would add at least" for a stream cut short)."""
    need = held + grow
    adds = where if where.endswith(" at least") else f"{where} would add"
    return (
        f"project {project!r} is over its storage quota: it may hold {size_text(limit)} (storage_bytes) and holds "
        f"{size_text(held)}; {adds} {size_text(grow)}. Delete objects in its buckets, or have a "
        f"project admin raise it: `kawa projects set-quota {project} --storage-bytes {max(need, limit + 1)}`"
    )


def measure(store: ObjectStore, project: str, limits: StorageLimits) -> int:
    """The bytes ``project``'s buckets hold now, by listing them."""
    total = 0
    for bucket in store.list_buckets():
        if limits.project_of(bucket.name) == project:
            total += sum(o.size for o in iter_objects(store, bucket.name))
    return total


class _Ledger:
    """What one project holds, as last measured plus this process's writes since, and what is in flight."""

    def __init__(self) -> None:
        self.held = 0
        self.reserved = 0
        self.measured_at: float | None = None
        self.measuring = False
        self.during = 0  # deltas completed while a measurement lists the buckets, added to its result


class QuotaStore:
    """An :class:`~kawa.store.base.ObjectStore` that keeps each project within its ``storage_bytes`` quota.

    Every other call, and every attribute of the backend (``root``, ``endpoint_url``, …), goes to ``inner``.
    """

    def __init__(self, inner: ObjectStore, limits: Callable[[], StorageLimits], *, refresh_s: float = REFRESH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.inner = inner
        self.uri = inner.uri
        self._read_limits = limits
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Condition()
        self._limits: StorageLimits | None = None
        self._limits_at = 0.0
        self._ledgers: dict[str, _Ledger] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # --- what a project holds ----------------------------------------------------------------------------

    def limits(self, *, fresh: bool = False) -> StorageLimits:
        """The projects' limits, read again every ``refresh_s`` (or now, when ``fresh``). A registry that cannot be
        read keeps the last limits read (with a warning); with none read yet, its error says what to do."""
        now = self._clock()
        if fresh or self._limits is None or now - self._limits_at >= self._refresh_s:
            try:
                self._limits = self._read_limits()
            except KawaError as exc:
                if self._limits is None:
                    raise
                log.warning("storage quotas: keeping the limits read before; %s", exc)
            self._limits_at = now
        return self._limits

    def used(self, project: str, *, fresh: bool = False) -> int:
        """The bytes ``project`` holds, as this store knows it (measured at most ``refresh_s`` ago)."""
        limits = self.limits()
        with self._lock:
            ledger = self._ledgers.setdefault(project, _Ledger())
            stale = ledger.measured_at is None or self._clock() - ledger.measured_at >= self._refresh_s
        if fresh or stale:
            self._measure(project, limits)
        with self._lock:
            return ledger.held

    def _measure(self, project: str, limits: StorageLimits) -> None:
        with self._lock:
            ledger = self._ledgers.setdefault(project, _Ledger())
            if ledger.measuring:  # another thread lists the buckets: wait for its result
                while ledger.measuring:
                    self._lock.wait()
                return
            ledger.measuring, ledger.during = True, 0
        try:
            total = measure(self.inner, project, limits)
        finally:
            with self._lock:
                ledger.measuring = False
                self._lock.notify_all()
        with self._lock:
            # A write that finished while the listing ran is counted, even if the listing saw it too: the
            # count may run over, never under, until the next measurement.
            ledger.held, ledger.measured_at = total + max(0, ledger.during), self._clock()

    def _reserve(self, project: str, limit: int, grow: int, where: str, already: int = 0) -> int:
        """Reserve ``grow`` bytes for ``project`` (returns what it reserved) or refuse, after measuring again and
        re-reading its limit; ``already``: what this write (a stream) reserved before."""
        if grow <= 0:
            return 0
        self.used(project)  # measured when first needed or stale
        for attempt in (0, 1):
            with self._lock:
                ledger = self._ledgers[project]
                if admit(limit, ledger.held, ledger.reserved, grow):
                    ledger.reserved += grow
                    return grow
                held = ledger.held + ledger.reserved - already
            if attempt == 0:
                fresh = self.limits(fresh=True).limit(project)
                if fresh is None:
                    return 0
                limit = fresh
                self._measure(project, self.limits())
        if already:
            where = f"{where} would add at least"
        raise StorageQuotaExceeded(refusal(project, limit, held, already + grow, where))

    def _settle(self, project: str, reserved: int, delta: int) -> None:
        with self._lock:
            ledger = self._ledgers.setdefault(project, _Ledger())
            ledger.reserved -= reserved
            ledger.held += delta
            if ledger.measuring:
                ledger.during += delta

    def _size(self, bucket: str, key: str) -> int:
        try:
            return self.inner.head(bucket, key).size
        except ObjectNotFound:
            return 0

    # --- writes ------------------------------------------------------------------------------------------

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
        limits = self.limits()
        project = limits.project_of(bucket)
        limit = limits.limit(project)
        if limit is None:
            return self.inner.put(bucket, key, body, content_type=content_type, metadata=metadata, tags=tags)
        old = self._size(bucket, key)
        where = f"the put of {bucket}/{key}"
        if isinstance(body, bytes | bytearray | memoryview):
            reserved = self._reserve(project, limit, len(body) - old, where)
            return self._finish(project, reserved, old, lambda: self.inner.put(
                bucket, key, body, content_type=content_type, metadata=metadata, tags=tags))
        counted = _Counted(self, project, limit, old, where)
        return self._finish(project, 0, old, lambda: self.inner.put(
            bucket, key, counted.chunks(body), content_type=content_type, metadata=metadata, tags=tags), counted)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
             metadata: Mapping[str, str] | None = None) -> ObjectInfo:  # fmt: skip
        limits = self.limits()
        project = limits.project_of(dst_bucket)
        limit = limits.limit(project)
        if limit is None:
            return self.inner.copy(src_bucket, src_key, dst_bucket, dst_key, metadata=metadata)
        old = self._size(dst_bucket, dst_key)
        grow = self.inner.head(src_bucket, src_key).size - old
        reserved = self._reserve(project, limit, grow, f"the copy to {dst_bucket}/{dst_key}")
        return self._finish(project, reserved, old,
                            lambda: self.inner.copy(src_bucket, src_key, dst_bucket, dst_key, metadata=metadata))

    def delete(self, bucket: str, key: str, *, missing_ok: bool = False) -> None:
        limits = self.limits()
        project = limits.project_of(bucket)
        if limits.limit(project) is None:
            self.inner.delete(bucket, key, missing_ok=missing_ok)
            return
        old = self._size(bucket, key)
        self.inner.delete(bucket, key, missing_ok=missing_ok)
        self._settle(project, 0, -old)

    def _finish(self, project: str, reserved: int, old: int, write: Callable[[], ObjectInfo],
                counted: _Counted | None = None) -> ObjectInfo:  # fmt: skip
        try:
            info = write()
        except BaseException:
            self._settle(project, counted.reserved if counted else reserved, 0)
            raise
        self._settle(project, counted.reserved if counted else reserved, info.size - old)
        return info


class _Counted:
    """A streamed body, its bytes reserved as they pass; past the limit it raises and the put stores nothing."""

    def __init__(self, store: QuotaStore, project: str, limit: int, old: int, where: str) -> None:
        self.store, self.project, self.limit, self.old, self.where = store, project, limit, old, where
        self.seen = 0
        self.reserved = 0

    def chunks(self, body: Body) -> Iterator[bytes]:
        for chunk in iter_body(body):
            self.seen += len(chunk)
            grow = self.seen - self.old - self.reserved
            if grow > 0:
                self.reserved += self.store._reserve(self.project, self.limit, grow, self.where, self.reserved)
            yield chunk


def registry_limits(config: KawaConfig) -> Callable[[], StorageLimits]:
    """A reader of the home's project registry: each project's ``storage_bytes`` limit."""
    from kawa.projects.registry import ProjectRegistry

    registry = ProjectRegistry.in_home(config.home)

    def read() -> StorageLimits:
        quotas = registry.quotas()
        limits = {name: q.storage_bytes for name, q in quotas.items()}
        limits.setdefault(DEFAULT_PROJECT, None)
        return StorageLimits(limits)

    return read


def with_storage_quota(store: ObjectStore, config: KawaConfig) -> QuotaStore:
    """``store`` within its projects' storage quotas, read from the home's project registry."""
    return QuotaStore(store, registry_limits(config), refresh_s=config.store.quota_refresh_s)
