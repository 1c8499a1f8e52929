"""Notices files that other programs put into (or remove from) bucket directories of the local backend.

Run by ``kawa up`` (one watcher per root: a second process waits for the first one's lock). On start it
reconciles: every file that appeared, changed or vanished while Kawa was down is notified once (the
:class:`~kawa.store.ledger.Ledger` remembers what was). Then watchdog reports changes: a file is handled
when it is complete: on Linux (inotify) at close-after-write, at a rename inside the watched tree, or, for a
file moved in from elsewhere or hard-linked (created without being written), once it was quiet for
``settle_s``; elsewhere once its size and mtime were stable for ``settle_s``. A rescan every
``rescan_interval_s`` catches anything the watcher missed (an overflowing event queue, a failed publish).
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import itertools
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from watchdog.events import FileSystemEventHandler

from kawa.errors import KawaError, NotificationPending, StoreError
from kawa.store.local import STATE, TMP, LocalStore
from kawa.store.naming import validate_bucket_name, validate_key

log = logging.getLogger("kawa.store.watcher")
TMP_MAX_AGE_S = 3600.0
_PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload")


def in_progress(name: str) -> bool:
    """A hidden partial file (``.scan.dcm.part``): the convention of scanners, curl, wget and browsers for a
    file still being written, which is renamed into place when complete. Never notified; its rename is."""
    return name.startswith(".") and name.endswith(_PARTIAL_SUFFIXES)

Action = tuple[str, str]  # (what happened or what to do, a path or a bucket name)


class LocalWatchService:
    """The ``kawa up`` service for the local backend: reconciliation scan plus filesystem watcher."""

    name = "store-watcher"

    def __init__(self, store: LocalStore, settle_s: float = 1.0, rescan_interval_s: float = 60.0) -> None:
        self.store = store
        self.settle_s = settle_s
        self.rescan_interval_s = rescan_interval_s
        self.close_events = sys.platform.startswith("linux")  # inotify reports close-after-write
        self._queue: queue.Queue[Action] = queue.Queue()
        self._delayed: list[tuple[float, int, Action]] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._watched: dict[str, Any] = {}
        self._created: set[str] = set()  # created, and neither written to nor closed since
        self._lock_file: IO[str] | None = None
        self.ready = threading.Event()
        """Set once the startup reconciliation finished and the watcher runs."""

    def start(self) -> None:
        if self.store.notifier.relay is not None:
            self.store.notifier.relay.watch()  # publish notifications any process left in the outbox
        self._thread = threading.Thread(target=self._run, name="kawa-store-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock

    # --- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        if not self._acquire_lock():
            return
        try:
            self._clean_tmp()
            self._start_observer()
            self.reconcile()
        except Exception:
            log.exception("store watcher failed to start")
            return
        self.ready.set()
        next_rescan = time.monotonic() + self.rescan_interval_s
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_rescan:
                self._safely(self.reconcile)
                next_rescan = now + self.rescan_interval_s
            while self._delayed and self._delayed[0][0] <= now:
                self._queue.put(heapq.heappop(self._delayed)[2])
            timeout = min(0.2, max(0.0, (self._delayed[0][0] - now) if self._delayed else 0.2))
            try:
                action = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            self._safely(self._handle, action)

    def _safely(self, func: Any, *args: Any) -> None:
        try:
            func(*args)
        except NotificationPending as exc:
            log.info("store watcher: %s", exc)
        except KawaError as exc:
            log.warning("store watcher: %s (will retry at the next rescan)", exc)
        except Exception:
            log.exception("store watcher: unexpected error (will retry at the next rescan)")

    def _acquire_lock(self) -> bool:
        path = self.store.root / STATE / "watcher.lock"
        self._lock_file = open(path, "a+")  # noqa: SIM115  # held for the service's lifetime
        warned = False
        while not self._stop.is_set():
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not warned:
                    log.warning("another kawa process watches %s; waiting for it to stop", self.store.root)
                    warned = True
                self._stop.wait(1.0)
        return False

    def _clean_tmp(self) -> None:
        cutoff = time.time() - TMP_MAX_AGE_S
        for entry in os.scandir(self.store.root / TMP):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)  # left behind by a crashed put

    def _start_observer(self) -> None:
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.store.root), recursive=False)
        for bucket in self.store.list_buckets():
            self._watch(bucket.name)
        self._observer.start()

    def _watch(self, bucket: str) -> None:
        if bucket in self._watched:
            return
        path = self.store.root / bucket
        self._watched[bucket] = self._observer.schedule(_Handler(self), str(path), recursive=True)

    def _unwatch(self, bucket: str) -> None:
        watch = self._watched.pop(bucket, None)
        if watch is not None:
            with contextlib.suppress(KeyError, OSError):  # watchdog may have dropped it with the directory
                self._observer.unschedule(watch)

    def _later(self, delay: float, action: Action) -> None:
        heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), action))

    # --- actions ----------------------------------------------------------------------------------

    def enqueue(self, kind: str, path: str) -> None:
        self._queue.put((kind, path))

    def _handle(self, action: Action) -> None:
        kind, arg = action
        if kind == "watch":  # a bucket directory appeared or went
            try:
                validate_bucket_name(arg)
            except StoreError:
                return
            if (self.store.root / arg).is_dir():
                self._watch(arg)
            else:
                self._unwatch(arg)
            self._later(self.settle_s, ("scan", arg))
            return
        if kind == "dirchange":
            located = self._locate(os.path.join(arg, "x"))
            if located is not None:
                self._later(self.settle_s, ("scan", located[0]))
            return
        if kind == "scan":
            try:
                self.scan(validate_bucket_name(arg))
            except StoreError:
                return
            return
        located = self._locate(arg)
        if located is None:
            return
        bucket, key, path = located
        if kind == "gone":
            self._created.discard(arg)
            self.store.tracker.observe_missing(bucket, key, path)
        elif kind == "created":
            # Moved in from outside the bucket or hard-linked: inotify reports no close for these. A file a
            # program creates and then writes sends "modified" and later "closed" instead.
            self._created.add(arg)
            self._later(self.settle_s, ("created-quiet", arg))
        elif kind == "modified":
            self._created.discard(arg)
        elif kind == "created-quiet":
            if arg in self._created:
                self._created.discard(arg)
                self._settle(bucket, key, path)
        elif kind == "settle":
            self._settle(bucket, key, path)
        else:
            self._created.discard(arg)
            self.store.tracker.observe(bucket, key, path, sidecar=self.store.read_sidecar(bucket, key))

    def _settle(self, bucket: str, key: str, path: Path) -> None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return
        if age < self.settle_s:
            self._later(self.settle_s - age + 0.05, ("settle", str(path)))
        else:
            self.store.tracker.observe(bucket, key, path, sidecar=self.store.read_sidecar(bucket, key))

    def _locate(self, raw: str) -> tuple[str, str, Path] | None:
        path = Path(raw)
        try:
            relative = path.relative_to(self.store.root)
        except ValueError:
            return None
        parts = relative.parts
        if len(parts) < 2 or parts[0].startswith(".") or in_progress(parts[-1]):
            return None
        try:
            return validate_bucket_name(parts[0]), validate_key("/".join(parts[1:])), path
        except StoreError:
            return None

    def reconcile(self) -> None:
        """Notify every change the ledger does not know yet, in every bucket (and vanished buckets)."""
        buckets = [b.name for b in self.store.list_buckets()]
        for bucket in buckets:
            self._watch(bucket)
            self.scan(bucket)
        for bucket in set(self.store.ledger.buckets()) - set(buckets):
            self.store.tracker.forget_missing(bucket, set(), self.store.root / bucket)

    def scan(self, bucket: str) -> None:
        """Handle every complete file of ``bucket``; files changed within ``settle_s`` are rescanned soon."""
        tracker, now = self.store.tracker, time.time()
        if not (self.store.root / bucket).is_dir():
            tracker.forget_missing(bucket, set(), self.store.root / bucket)
            return
        present: set[str] = set()
        fresh = False
        for key, path in self.store.iter_files(bucket):
            if in_progress(path.name):
                continue
            present.add(key)
            try:
                if now - path.lstat().st_mtime < self.settle_s:
                    fresh = True
                    continue
            except FileNotFoundError:
                continue
            tracker.observe(bucket, key, path, sidecar=self.store.read_sidecar(bucket, key))
        tracker.forget_missing(bucket, present, self.store.root / bucket)
        if fresh:
            self._later(self.settle_s, ("scan", bucket))


class _Handler(FileSystemEventHandler):  # type: ignore[misc]
    """Turns watchdog events into worker actions (runs on watchdog's thread: only enqueues)."""

    def __init__(self, service: LocalWatchService) -> None:
        super().__init__()
        self.service = service

    def on_any_event(self, event: Any) -> None:
        service, kind = self.service, event.event_type
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if kind == "moved" else ""
        root = str(service.store.root)
        if event.is_directory:
            if kind not in ("created", "deleted", "moved"):
                return
            for path in (src, dest):
                if not path:
                    continue
                if os.path.dirname(path) == root:  # a bucket directory appeared or went
                    service.enqueue("watch", os.path.basename(path))
                else:  # a whole tree came or went inside a bucket: rescan it soon
                    service.enqueue("dirchange", path)
            return
        if kind == "closed":
            service.enqueue("file", src)
        elif kind == "moved":
            service.enqueue("gone", src)
            service.enqueue("file", dest)
        elif kind == "deleted":
            service.enqueue("gone", src)
        elif kind in ("created", "modified"):
            service.enqueue(kind if service.close_events else "settle", src)
