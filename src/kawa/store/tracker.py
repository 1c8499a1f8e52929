"""Turns changes of local files into notifications exactly once per object version.

Used by the local backend's own writes (put, copy, delete) and by the watcher and reconciliation scan that
catch files other programs wrote. Every path goes through the :class:`~kawa.store.ledger.Ledger`, so a put
through Kawa that the watcher also sees, or a restart that rescans the tree, publishes nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from kawa.errors import NotificationPending
from kawa.store.ledger import Entry, Ledger, Signature, signature
from kawa.store.records import Notifier

log = logging.getLogger("kawa.store.tracker")

PUT = "ObjectCreated:Put"
COPY = "ObjectCreated:Copy"
DELETE = "ObjectRemoved:Delete"
ORPHAN_AFTER_S = 300.0

_seq_lock = threading.Lock()
_last_seq = [0]
_in_flight: set[tuple[str, str, str]] = set()  # (ledger, bucket, key) between rename and publish, this process


def next_sequencer() -> str:
    """A hex sequencer that grows with every call in this process (and with the clock across processes)."""
    with _seq_lock:
        value = max(time.time_ns(), _last_seq[0] + 1)
        _last_seq[0] = value
    return f"{value:016X}"


def file_md5(path: Path, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ChangeTracker:
    """Publishes the notification for each new object version once, across processes and restarts."""

    def __init__(self, ledger: Ledger, notifier: Notifier) -> None:
        self.ledger = ledger
        self.notifier = notifier

    # --- writes through Kawa --------------------------------------------------------------------

    def staged(self, bucket: str, key: str, sig: Signature, etag: str) -> None:
        """Called just before a put makes the file visible: the watcher will recognise and skip it."""
        with _seq_lock:
            _in_flight.add((str(self.ledger.path), bucket, key))
        self.ledger.mark(bucket, key, sig, etag, "pending")

    def unstaged(self, bucket: str, key: str) -> None:
        """The put ended (published, failed to publish, or never made the file visible)."""
        with _seq_lock:
            _in_flight.discard((str(self.ledger.path), bucket, key))

    def in_flight(self, bucket: str, key: str) -> bool:
        with _seq_lock:
            return (str(self.ledger.path), bucket, key) in _in_flight

    def created(
        self,
        event_name: str,
        bucket: str,
        key: str,
        sig: Signature,
        *,
        etag: str,
        sequencer: str,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Publish ``event_name`` for a version now visible, then remember it as done."""
        rules = self.notifier.rules_for(bucket, event_name, key)
        try:
            count = self.notifier.notify(
                rules, event_name, bucket, key, size=sig[0], etag=etag, sequencer=sequencer, metadata=metadata
            )
        except NotificationPending:
            self.ledger.mark(bucket, key, sig, etag, "done")  # the outbox owns it now
            raise
        self.ledger.mark(bucket, key, sig, etag, "done")
        return count

    def removing(self, bucket: str, key: str) -> None:
        """Called before a delete through Kawa unlinks the file, so the watcher does not report it too."""
        self.ledger.remove(bucket, key)

    def removed(self, bucket: str, key: str) -> int:
        rules = self.notifier.rules_for(bucket, DELETE, key)
        return self.notifier.notify(rules, DELETE, bucket, key, size=None, etag=None, sequencer=next_sequencer())

    # --- files written or removed by other programs ---------------------------------------------

    def observe(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        sidecar: Mapping[str, object] | None = None,
    ) -> int:
        """Handle a file that is complete on disk; returns the number of notifications published.

        ``sidecar`` is the metadata a Kawa put stored for this version, if any (used to finish an
        orphaned put whose writer died before publishing).
        """
        try:
            st = path.lstat()
        except FileNotFoundError:
            return 0
        if not _is_regular(st):
            return 0
        sig = signature(st)
        entry = self.ledger.get(bucket, key)
        if entry is not None and entry.signature == sig:
            if not entry.orphaned(ORPHAN_AFTER_S, self.in_flight(bucket, key)):
                return 0
            log.warning("finishing the notification of %s/%s: its writer stopped before publishing", bucket, key)
        etag = entry.etag if entry is not None and entry.signature == sig else file_md5(path)
        try:
            if signature(path.lstat()) != sig:
                return 0  # still being written: its close (or the next scan) brings it back
        except FileNotFoundError:
            return 0
        metadata: Mapping[str, str] | None = None
        sequencer = f"{st.st_mtime_ns:016X}"
        if sidecar and _sidecar_sig(sidecar) == sig:
            metadata = sidecar.get("metadata")  # type: ignore[assignment]
            sequencer = str(sidecar.get("sequencer") or sequencer)
        return self.created(PUT, bucket, key, sig, etag=etag, sequencer=sequencer, metadata=metadata)

    def observe_missing(self, bucket: str, key: str, path: Path) -> int:
        """Handle a file that disappeared; publishes ``ObjectRemoved:Delete`` if Kawa knew the object."""
        if self.ledger.get(bucket, key) is None or path.exists():
            return 0
        self.ledger.remove(bucket, key)
        return self.removed(bucket, key)

    def forget_missing(self, bucket: str, present: set[str], root: Path) -> int:
        """After a scan of ``bucket``: report every remembered object that is gone."""
        count = 0
        for entry in list(self.ledger.entries(bucket)):
            if entry.key in present:
                continue
            if entry.state == "pending" and not entry.orphaned(ORPHAN_AFTER_S, self.in_flight(bucket, entry.key)):
                continue  # a put is about to rename its file into place
            count += self.observe_missing(bucket, entry.key, root.joinpath(*entry.key.split("/")))
        return count

    def baseline(self, bucket: str, files: list[tuple[str, Path]]) -> None:
        """Remember files as seen without notifying them (a rule applies to changes after it was added)."""
        for key, path in files:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            entry: Entry | None = self.ledger.get(bucket, key)
            if entry is None or entry.signature != signature(st):
                self.ledger.mark(bucket, key, signature(st), "", "done")


def _is_regular(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def _sidecar_sig(sidecar: Mapping[str, object]) -> Signature | None:
    try:
        return (int(sidecar["size"]), int(sidecar["mtime_ns"]), int(sidecar["inode"]))  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        return None
