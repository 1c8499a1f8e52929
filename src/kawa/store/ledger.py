"""The local backend's memory of what it has seen and notified, shared by every process on one root.

One SQLite row per object: its file signature (size, mtime, inode), ETag and state. ``pending`` means a put
through Kawa made the file visible and has not yet published its notification; ``done`` means the version
with that signature was handled (notified when a rule matched). A watcher or reconciliation scan skips a
file whose signature matches its row, so nothing is notified twice across processes and restarts.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kawa.errors import StoreError

Signature = tuple[int, int, int]  # size, mtime_ns, inode


def signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class Entry:
    bucket: str
    key: str
    size: int
    mtime_ns: int
    inode: int
    etag: str
    state: str  # "pending" | "done"
    pid: int
    updated: float

    @property
    def signature(self) -> Signature:
        return (self.size, self.mtime_ns, self.inode)

    def orphaned(self, stale_after_s: float, in_flight: bool = False) -> bool:
        """A pending row whose writer died, failed or hung for ``stale_after_s``: its notification must be
        redone. ``in_flight``: this process is still between the rename and the publish of this object."""
        if self.state != "pending":
            return False
        if time.time() - self.updated > stale_after_s:
            return True
        if self.pid == os.getpid():
            return not in_flight
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, etag TEXT NOT NULL, state TEXT NOT NULL, pid INTEGER NOT NULL,
    updated REAL NOT NULL, PRIMARY KEY (bucket, key)
) WITHOUT ROWID
"""


class Ledger:
    """Thread-safe and multi-process safe (SQLite WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the notification ledger {path}: {exc}") from exc

    def get(self, bucket: str, key: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM objects WHERE bucket=? AND key=?", (bucket, key)).fetchone()
        return Entry(*row) if row else None

    def mark(self, bucket: str, key: str, sig: Signature, etag: str, state: str) -> None:
        size, mtime_ns, inode = sig
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?,?,?,?,?)",
                (bucket, key, size, mtime_ns, inode, etag, state, os.getpid(), time.time()),
            )

    def remove(self, bucket: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))

    def entries(self, bucket: str | None = None) -> Iterator[Entry]:
        with self._lock:
            if bucket is None:
                rows = self._db.execute("SELECT * FROM objects ORDER BY bucket, key").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM objects WHERE bucket=? ORDER BY key", (bucket,)).fetchall()
        for row in rows:
            yield Entry(*row)

    def buckets(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT bucket FROM objects").fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
