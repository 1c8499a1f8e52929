"""Stored ⇒ notified: the durable outbox of notifications the log did not take.

A put through Kawa stores the object first and publishes its notification second. When the log cannot
take the notification at that moment (Kafka down, a full queue), the encoded record — topic, key, value and
headers, so the same CloudEvent id — goes into this outbox, a SQLite file beside the store, and the put tells
its caller that the notification is pending (:class:`~kawa.errors.NotificationPending`). A
:class:`OutboxRelay` publishes what the outbox holds as soon as the log takes it: in the process that made the
put while it runs, in the running platform (``kawa up`` watches the outbox all the time), and on the next start
of anything that opens the store. A record leaves the outbox only after the log acknowledged it; two relays
may both publish a record, which consumers see as one (same ``source`` + ``id``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kawa.errors import StoreError

log = logging.getLogger("kawa.store.outbox")

_SCHEMA = """CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB,
    headers TEXT NOT NULL,
    added REAL NOT NULL
)"""


@dataclass(frozen=True)
class Pending:
    """One notification waiting for the log."""

    id: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    added: float


def _encode_headers(headers: list[tuple[str, bytes]]) -> str:
    return json.dumps([[name, base64.b64encode(value or b"").decode()] for name, value in headers])


def _decode_headers(text: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(name), base64.b64decode(value)) for name, value in json.loads(text))


class Outbox:
    """Thread-safe and multi-process safe (SQLite WAL with a busy timeout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")  # an acknowledged put's notification survives a crash
                db.execute(_SCHEMA)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the notification outbox {self.path}: {exc}") from exc
            self._db = db
        return self._db

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        with self._lock:
            self._conn().execute(
                "INSERT INTO outbox (topic, key, value, headers, added) VALUES (?,?,?,?,?)",
                (topic, key, value, _encode_headers(headers), time.time()),
            )

    def count(self) -> int:
        """How many notifications wait (0 without opening anything when the file does not exist)."""
        if self._db is None and not self.path.exists():
            return 0
        with self._lock:
            row = self._conn().execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(row[0])

    def oldest(self, limit: int = 100) -> list[Pending]:
        with self._lock:
            rows = self._conn().execute(
                "SELECT id, topic, key, value, headers, added FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [Pending(r[0], r[1], r[2], r[3], _decode_headers(r[4]), r[5]) for r in rows]

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            self._conn().executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


Publish = Callable[[Pending], None]


class OutboxRelay:
    """Publishes an outbox's notifications in a background thread until it is empty (or, with
    :meth:`watch`, for as long as the relay runs), with a growing backoff while the log refuses them.

    ``publish`` must return only once the log acknowledged the record and raise otherwise."""

    def __init__(self, outbox: Outbox, publish: Publish, *, idle_check_s: float = 1.0) -> None:
        self.outbox = outbox
        self._publish = publish
        self.idle_check_s = idle_check_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watching = False
        self.published = 0

    def kick(self) -> None:
        """Start (or wake) the relay: there is something to publish."""
        with self._lock:
            if self._stop.is_set():
                return
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kawa-store-outbox", daemon=True)
                self._thread.start()

    def watch(self) -> None:
        """Keep relaying for the life of this relay, also what other processes add (``kawa up``)."""
        self._watching = True
        self.kick()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def relay_once(self) -> int:
        """Publish what waits now (under a file lock, so one relay at a time does it); returns how many."""
        with self._file_lock() as held:
            if not held:
                return 0
            done = 0
            while not self._stop.is_set():
                batch = self.outbox.oldest()
                if not batch:
                    break
                for pending in batch:
                    self._publish(pending)  # raises while the log refuses: the rest stays for the next try
                    self.outbox.remove([pending.id])
                    done += 1
            self.published += done
            return done

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[bool]:
        path = self.outbox.path.with_name(self.outbox.path.name + ".lock")
        handle: IO[str] = open(path, "a+")  # noqa: SIM115  # held for one pass
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            handle.close()

    def _run(self) -> None:
        backoff = 0.5
        announced = False
        while not self._stop.is_set():
            try:
                waiting = self.outbox.count()
                if waiting:
                    if not announced:
                        log.warning("%d stored object(s) wait for their notification; publishing them as soon as "
                                    "the event log takes them", waiting)
                        announced = True
                    done = self.relay_once()
                    if done:
                        log.info("published %d pending notification(s) from the outbox", done)
                    backoff = 0.5
                    if self.outbox.count() and not done:
                        self._stop.wait(self.idle_check_s)  # another relay holds the lock
                    continue
                announced = False
                if not self._watching:
                    with self._lock:  # a kick since the count above runs another round
                        if not self._wake.is_set():
                            self._thread = None
                            return
                        self._wake.clear()
                    continue
            except Exception as exc:
                log.warning("the event log does not take the pending notifications yet (%s); next try in %.0f s",
                            exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self._wake.wait(self.idle_check_s)
            self._wake.clear()
