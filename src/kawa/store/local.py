"""The local backend: one directory per bucket, objects as plain files.

Layout under the root (default ``<home>/buckets``)::

    <bucket>/<key>                    the object, exactly as the user sees it (``ls`` shows only these)
    .kawa-meta/<bucket>/<key>         JSON sidecar: ETag, content type, metadata, tags, sequencer
    .kawa-tmp/                        writes in progress (same filesystem, so the final rename is atomic)
    .kawa-state/                      notification rules and the ledger of notified versions

A put writes a temporary file (hashing it on the way), fsyncs it, writes the sidecar and renames the file
into place with ``os.replace``: readers see the old or the new object, never a partial one. Files that
other programs put into a bucket directory are objects too: their ETag is computed on demand. Only
regular files are objects; a key cannot be both an object and a "directory" of other keys (``a`` and
``a/b``), which S3 allows but a filesystem does not (:class:`~kawa.errors.InvalidKey`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import (
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    InvalidKey,
    NotificationError,
    NotificationPending,
    ObjectNotFound,
    StoreError,
)
from kawa.store.base import Body, BucketInfo, ObjectInfo, ObjectPage, ObjectReader, iter_body
from kawa.store.ledger import Ledger, signature
from kawa.store.naming import (
    default_content_type,
    normalize_metadata,
    normalize_tags,
    validate_bucket_name,
    validate_content_type,
    validate_key,
)
from kawa.store.paging import check_max_keys, select_page
from kawa.store.records import Notifier
from kawa.store.rules import NotificationRule, RuleRegistry
from kawa.store.tracker import COPY, PUT, ChangeTracker, file_md5, next_sequencer

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.log.base import EventLog

META, TMP, STATE = ".kawa-meta", ".kawa-tmp", ".kawa-state"


class LocalStore:
    """An :class:`~kawa.store.base.ObjectStore` on a directory tree, publishing its own notifications."""

    def __init__(self, root: Path, config: KawaConfig, log: EventLog | Callable[[], EventLog] | None = None) -> None:
        self.root = root.resolve()
        self.uri = f"file:{self.root}"
        self.config = config
        try:
            for name in (META, TMP, STATE):
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot keep a local store in {self.root}: {exc.strerror or exc}; point store.uri at a "
                             "directory Kawa may write") from exc  # fmt: skip
        self._given_log = log
        self.registry = RuleRegistry(self.root / STATE / "notifications.json")
        self.ledger = Ledger(self.root / STATE / "ledger.sqlite")
        self.notifier = Notifier(
            self.registry, self._log, config.store.region, outbox=self.root / STATE / "outbox.sqlite",
            publish_timeout_s=config.store.notify.publish_timeout_s,
        )  # fmt: skip
        self.tracker = ChangeTracker(self.ledger, self.notifier)
        self._etags: dict[tuple[str, tuple[int, int, int]], str] = {}

    def _log(self) -> EventLog:
        if self._given_log is None:
            raise NotificationError(
                "this store was opened without an event log, so it cannot publish notifications; open it "
                "with kawa.backends.open_backends(config).store (or pass log=...)"
            )
        return self._given_log() if callable(self._given_log) else self._given_log

    # --- paths ------------------------------------------------------------------------------------

    def bucket_dir(self, bucket: str) -> Path:
        return self.root / validate_bucket_name(bucket)

    def _existing_bucket(self, bucket: str) -> Path:
        path = self.bucket_dir(bucket)
        if not path.is_dir():
            raise BucketNotFound(f"bucket {bucket!r} does not exist; create it with `kawa buckets create {bucket}`")
        return path

    def object_path(self, bucket: str, key: str) -> Path:
        """Where ``key`` lives; raises :class:`InvalidKey` if a symlink would lead outside the bucket."""
        base = self._existing_bucket(bucket)
        parts = validate_key(key).split("/")
        path = base.joinpath(*parts)
        # Fast path (an lstat per directory of the key, instead of resolving both paths on every get and
        # put): with no symbolic link among the key's directories, the path cannot leave the bucket (keys
        # hold no '..'). A link there gets the full check: allowed only if it stays inside the bucket.
        current, linked = base, False
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink():
                linked = True
                break
        if linked and not path.parent.resolve().is_relative_to(base.resolve()):
            raise InvalidKey(f"object key {key!r} leads outside bucket {bucket!r} through a symbolic link")
        return path

    def _sidecar_path(self, bucket: str, key: str) -> Path:
        return self.root.joinpath(META, bucket, *key.split("/"))

    def read_sidecar(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self._sidecar_path(bucket, key).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # --- buckets ----------------------------------------------------------------------------------

    def create_bucket(self, name: str, *, exist_ok: bool = False) -> None:
        path = self.bucket_dir(name)
        try:
            path.mkdir()
        except FileExistsError:
            if not exist_ok:
                raise BucketExists(f"bucket {name!r} already exists") from None

    def list_buckets(self) -> list[BucketInfo]:
        out = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                validate_bucket_name(entry.name)
            except StoreError:
                continue  # a directory that is not a valid bucket name is not a bucket
            created = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            out.append(BucketInfo(entry.name, created))
        return out

    def bucket_exists(self, name: str) -> bool:
        return self.bucket_dir(name).is_dir()

    def delete_bucket(self, name: str) -> None:
        path = self._existing_bucket(name)
        if next(self._walk(path, ""), None) is not None:
            raise BucketNotEmpty(f"bucket {name!r} is not empty; delete its objects first (`kawa rm`)")
        shutil.rmtree(path)
        shutil.rmtree(self.root / META / name, ignore_errors=True)

    # --- objects ----------------------------------------------------------------------------------

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
        path = self.object_path(bucket, key)
        attrs = {
            "content_type": validate_content_type(content_type) or default_content_type(key),
            "metadata": normalize_metadata(metadata),
            "tags": normalize_tags(tags),
        }
        return self._write(bucket, key, path, iter_body(body), attrs, PUT)

    def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        path = self.object_path(dst_bucket, dst_key)
        with self.get(src_bucket, src_key) as reader:
            src = reader.info
            attrs = {
                "content_type": src.content_type,
                "metadata": normalize_metadata(metadata) if metadata is not None else dict(src.metadata),
                "tags": self.tags(src_bucket, src_key),
            }
            return self._write(dst_bucket, dst_key, path, reader.iter_chunks(), attrs, COPY)

    def _write(
        self, bucket: str, key: str, path: Path, chunks: Iterator[bytes], attrs: dict[str, Any], event: str
    ) -> ObjectInfo:
        fd, tmp_name = tempfile.mkstemp(dir=self.root / TMP, prefix="put-")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                if self.config.store.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            etag = digest.hexdigest()
            self._make_parents(bucket, key, path)
            st = tmp.stat()
            sig = signature(st)
            sequencer = next_sequencer()
            sidecar = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "etag": etag,
                       "sequencer": sequencer, **attrs}
            self._write_sidecar(bucket, key, sidecar)
            self.tracker.staged(bucket, key, sig, etag)
            os.replace(tmp, path)
        except BaseException:
            self.tracker.unstaged(bucket, key)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        info = self._info(bucket, key, st, sidecar)
        try:
            self.tracker.created(event, bucket, key, sig, etag=etag, sequencer=sequencer, metadata=attrs["metadata"])
        except NotificationPending as exc:
            raise NotificationPending(f"{bucket}/{key} is stored; {exc}", info=info) from exc
        except NotificationError as exc:
            raise NotificationError(
                f"{bucket}/{key} is stored, but its notification was not published ({exc}); the reconciliation "
                "of `kawa up` publishes it once the log is reachable"
            ) from exc
        finally:
            self.tracker.unstaged(bucket, key)
        return info

    def _make_parents(self, bucket: str, key: str, path: Path) -> None:
        if path.is_dir():
            raise InvalidKey(
                f"cannot store {key!r} in bucket {bucket!r}: objects exist under '{key}/', and the local "
                "backend cannot hold a key that is also a prefix of other keys"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sidecar_path(bucket, key).parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidKey(
                f"cannot store {key!r} in bucket {bucket!r}: a part of it is an existing object, and the "
                "local backend cannot hold both 'a' and 'a/b'"
            ) from None

    def _write_sidecar(self, bucket: str, key: str, data: dict[str, Any]) -> None:
        target = self._sidecar_path(bucket, key)
        fd, tmp = tempfile.mkstemp(dir=self.root / TMP, prefix="meta-")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, target)

    def _info(self, bucket: str, key: str, st: os.stat_result, sidecar: Mapping[str, Any] | None) -> ObjectInfo:
        modified = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
        if sidecar is not None and _sidecar_matches(sidecar, st):
            return ObjectInfo(bucket, key, st.st_size, sidecar["etag"], sidecar.get("content_type"),
                              dict(sidecar.get("metadata") or {}), modified, None, sidecar.get("sequencer"))
        # A file another program wrote: no sidecar (or a stale one); compute and cache the ETag.
        path = self.root.joinpath(bucket, *key.split("/"))
        cache_key = (str(path), signature(st))
        etag = self._etags.get(cache_key)
        if etag is None:
            etag = file_md5(path)
            if len(self._etags) > 10_000:
                self._etags.clear()
            self._etags[cache_key] = etag
        return ObjectInfo(bucket, key, st.st_size, etag, default_content_type(key), {}, modified, None,
                          f"{st.st_mtime_ns:016X}")

    def get(self, bucket: str, key: str) -> ObjectReader:
        path = self.object_path(bucket, key)
        try:
            handle = open(path, "rb")  # noqa: SIM115  # the reader owns and closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found in bucket {bucket!r}") from None
        try:
            info = self._info(bucket, key, os.fstat(handle.fileno()), self.read_sidecar(bucket, key))
        except BaseException:
            handle.close()
            raise
        return ObjectReader(info, handle)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        return self._info(bucket, key, self._stat(bucket, key), self.read_sidecar(bucket, key))

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        st = self._stat(bucket, key)
        sidecar = self.read_sidecar(bucket, key)
        if sidecar is not None and _sidecar_matches(sidecar, st):
            return dict(sidecar.get("tags") or {})
        return {}

    def _stat(self, bucket: str, key: str) -> os.stat_result:
        path = self.object_path(bucket, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found in bucket {bucket!r}") from None
        if not path.is_file():
            raise ObjectNotFound(f"object {key!r} not found in bucket {bucket!r} ('{key}/' is a prefix)")
        return st

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> ObjectPage:
        check_max_keys(max_keys)
        base = self._existing_bucket(bucket)
        paths = dict(self._walk(base, prefix))
        page, token = select_page(iter(paths), prefix=prefix, start_after=start_after,
                                  continuation_token=continuation_token, max_keys=max_keys)
        objects = []
        for key in page:
            # The walk found a regular file through no symbolic link: stat it where it is (no head(), whose
            # path checks cost more than the stat and the sidecar read on a listing of thousands).
            try:
                st = os.stat(paths[key], follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted while listing
            if not stat.S_ISREG(st.st_mode):
                continue  # replaced by something else while listing
            objects.append(self._info(bucket, key, st, self.read_sidecar(bucket, key)))
        return ObjectPage(tuple(objects), token)

    def iter_files(self, bucket: str) -> Iterator[tuple[str, Path]]:
        """``(key, path)`` of every regular file in a bucket directory (unordered)."""
        yield from self._walk(self.bucket_dir(bucket), "")

    def _walk(self, base: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        # Start at the deepest directory the prefix names, so a narrow prefix reads a narrow subtree.
        start = base
        parts = prefix.split("/")[:-1]
        for part in parts:
            if part in ("", ".", ".."):
                break
            start = start / part
        if not start.is_dir():
            return
        stack = [start]
        while stack:
            current = stack.pop()
            try:
                entries = list(os.scandir(current))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    key = Path(entry.path).relative_to(base).as_posix()
                    try:
                        yield validate_key(key), Path(entry.path)
                    except InvalidKey:
                        continue  # a file name Kawa cannot address (e.g. with a backslash)

    def delete(self, bucket: str, key: str, *, missing_ok: bool = False) -> None:
        path = self.object_path(bucket, key)
        if not path.is_file():
            if missing_ok:
                return
            raise ObjectNotFound(f"object {key!r} not found in bucket {bucket!r}")
        self.tracker.removing(bucket, key)
        path.unlink(missing_ok=True)
        self._sidecar_path(bucket, key).unlink(missing_ok=True)
        self._prune(self.bucket_dir(bucket), path.parent)
        self._prune(self.root / META / bucket, self._sidecar_path(bucket, key).parent)
        self.tracker.removed(bucket, key)

    @staticmethod
    def _prune(stop: Path, directory: Path) -> None:
        while directory != stop and directory.is_relative_to(stop):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # --- notifications ----------------------------------------------------------------------------

    def add_notification(self, rule: NotificationRule) -> NotificationRule:
        self._existing_bucket(rule.bucket)
        if rule.id not in {r.id for r in self.registry.rules(rule.bucket)}:
            # A new rule covers changes from now on. Re-adding a rule (as every `kawa up` of a function app
            # does) must not mark files that arrived while Kawa was down as seen: reconciliation owns them.
            self.tracker.baseline(rule.bucket, list(self.iter_files(rule.bucket)))
        self.notifier.ensure_topic(rule.topic)
        return self.registry.put(rule.with_target("local"))

    def notifications(self, bucket: str) -> list[NotificationRule]:
        return self.registry.rules(validate_bucket_name(bucket))

    def remove_notification(self, bucket: str, rule_id: str) -> None:
        self.registry.remove(bucket, rule_id)

    def close(self) -> None:
        self.notifier.close()
        self.ledger.close()


def _sidecar_matches(sidecar: Mapping[str, Any], st: os.stat_result) -> bool:
    """Whether the sidecar describes this version of the file (another program may have replaced it)."""
    return (sidecar.get("size"), sidecar.get("mtime_ns"), sidecar.get("inode")) == signature(st)


def build(uri: str, config: KawaConfig, log: EventLog | None = None, **_: Any) -> LocalStore:
    """``file:`` → ``<home>/buckets``; ``file:/abs/path``, ``file:///abs/path`` or a bare path → that dir."""
    if uri in ("file:", "file://", "local:", ""):
        root = config.path("buckets")
    elif uri.startswith("file://"):
        root = Path(uri[len("file://") :])
    elif uri.startswith(("file:", "local:")):
        root = Path(uri.split(":", 1)[1])
    else:
        root = Path(uri)
    return LocalStore(root.expanduser(), config, log)
