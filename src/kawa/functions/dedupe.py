"""Durable deduplication of finished work, keyed by the event's :class:`~kawa.events.EventRef`.

The host records every event a function finished (succeeded or was dead-lettered) under
``EventRef.of(event).key()`` (``source\x1fid``, the form this store has always used, so existing state needs no
migration) and skips an event it finds recorded, so a redelivery after a crash or a rebalance changes nothing.
The same id from another source is another event. Handlers mark their own side-effect steps with
``ctx.once(...)`` (:class:`Once`).

Backends (``functions.dedupe`` in ``kawa.yaml``, chosen by URI scheme):

- ``sqlite:`` (default) — a SQLite file under the Kawa home (``sqlite:/path/file.db`` elsewhere). Shared by
  every process on one machine (WAL mode); survives process crashes. Right for ``kawa up`` and for
  ``kawa worker`` processes on one host.
- ``memory:`` — one process, gone with it (tests).
- ``none:`` — no deduplication (at-least-once only).

Distributed deployments (workers on several machines, Knative pods) need a store every replica shares: a
database table (the same schema on PostgreSQL) or a compacted Kafka topic keyed by scope+key. Both fit the
:class:`DedupeStore` protocol; register a builder in :data:`dedupe_backends`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from kawa.errors import FunctionError, InvalidFunction
from kawa.plugins import SchemeRegistry

DONE = "done"
DEAD_LETTERED = "dead-lettered"
REPLIED = "replied"  # finished, but its reply went only to an HTTP caller: re-run to answer a retry

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kawa_done ("
    "scope TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, ts REAL NOT NULL, "
    "PRIMARY KEY (scope, key)) WITHOUT ROWID"
)


class DedupeStore(Protocol):
    """Durable memory of finished work.

    Guarantee: once :meth:`mark` returns, :meth:`status` returns the mark in every process that shares
    the store, also after a crash of the marking process. Entries older than the log's retention may be
    pruned: an event cannot be redelivered after its record is gone.
    """

    def status(self, scope: str, key: str) -> str | None:
        """The recorded status of ``key`` in ``scope``, or None when it was never marked."""
        ...

    def mark(self, scope: str, entries: Iterable[tuple[str, str]]) -> None:
        """Record ``(key, status)`` pairs atomically (all or none); an existing entry is overwritten."""
        ...

    def prune(self, older_than_s: float) -> int:
        """Drop entries marked more than ``older_than_s`` seconds ago; returns how many."""
        ...

    def close(self) -> None: ...


class MemoryDedupeStore:
    """A :class:`DedupeStore` in a dict: one process, lost when it exits."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def status(self, scope: str, key: str) -> str | None:
        entry = self._data.get((scope, key))
        return entry[0] if entry else None

    def mark(self, scope: str, entries: Iterable[tuple[str, str]]) -> None:
        now = time.time()
        with self._lock:
            for key, status in entries:
                self._data[(scope, key)] = (status, now)

    def prune(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        with self._lock:
            old = [k for k, (_s, ts) in self._data.items() if ts < cutoff]
            for k in old:
                del self._data[k]
        return len(old)

    def close(self) -> None:
        pass


class NullDedupeStore(MemoryDedupeStore):
    """Remembers nothing: every delivery runs the handler (at-least-once)."""

    def mark(self, scope: str, entries: Iterable[tuple[str, str]]) -> None:
        pass


class SQLiteDedupeStore:
    """A :class:`DedupeStore` in a SQLite file, safe across threads and processes (WAL journal).

    ``synchronous=NORMAL``: a mark survives a process crash (it is in the OS once committed), not
    necessarily a power loss — the same durability as the embedded log's default.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise FunctionError(f"cannot open the dedupe store {self.path}: {exc}; check the path is writable") from exc
        self._lock = threading.Lock()

    def status(self, scope: str, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT status FROM kawa_done WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def mark(self, scope: str, entries: Iterable[tuple[str, str]]) -> None:
        now = time.time()
        rows = [(scope, key, status, now) for key, status in entries]
        if not rows:
            return
        try:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany("INSERT OR REPLACE INTO kawa_done VALUES (?, ?, ?, ?)", rows)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise FunctionError(f"cannot record finished events in {self.path}: {exc}") from exc

    def prune(self, older_than_s: float) -> int:
        with self._lock:
            cursor = self._conn.execute("DELETE FROM kawa_done WHERE ts < ?", (time.time() - older_than_s,))
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Once:
    """``with ctx.once("name") as fresh:`` — run a side effect at most once per event, durably.

    ``fresh`` is False when this step of this event already finished (a redelivery); the body should then
    skip the effect. The step is marked finished when the block exits without an exception.

    Without ``conn`` the mark goes to the function's dedupe store after the block: a crash between the
    effect and the mark repeats the effect once (at-least-once; make it idempotent). With ``conn`` — a
    ``sqlite3.Connection`` that the effect writes through — the check, the effect and the mark are one
    transaction (``BEGIN IMMEDIATE`` … ``COMMIT``) of that database: exactly once, also across crashes
    and concurrent redeliveries. The mark lives in a ``kawa_done`` table of that database.
    """

    def __init__(self, store: DedupeStore, scope: str, key: str, conn: Any = None) -> None:
        if conn is not None and not isinstance(conn, sqlite3.Connection):
            raise InvalidFunction(
                "ctx.once(conn=...) takes a sqlite3.Connection; for other databases write an idempotent "
                "effect keyed by ctx.idempotency_key(...) (e.g. INSERT ... ON CONFLICT DO NOTHING)"
            )
        self._store, self._scope, self._key, self._conn = store, scope, key, conn
        self.fresh = False
        self._began = False

    def __enter__(self) -> bool:
        conn = self._conn
        if conn is None:
            self.fresh = self._store.status(self._scope, self._key) is None
            return self.fresh
        conn.execute(_SCHEMA)
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self._began = True
        row = conn.execute(
            "SELECT 1 FROM kawa_done WHERE scope = ? AND key = ?", (self._scope, self._key)
        ).fetchone()
        self.fresh = row is None
        return self.fresh

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        conn = self._conn
        if conn is None:
            if exc_type is None and self.fresh:
                self._store.mark(self._scope, [(self._key, DONE)])
            return
        if exc_type is not None:
            conn.rollback()
            return
        if self.fresh:
            conn.execute(
                "INSERT INTO kawa_done VALUES (?, ?, ?, ?)", (self._scope, self._key, DONE, time.time())
            )
        if self._began or self.fresh:
            conn.commit()


dedupe_backends: SchemeRegistry[DedupeStore] = SchemeRegistry("dedupe store")


def _build_sqlite(uri: str, *, config: Any = None, **_: Any) -> DedupeStore:
    path = uri.split(":", 1)[1] if ":" in uri else ""
    path = path[2:] if path.startswith("//") else path
    if not path:
        if config is None:
            raise InvalidFunction("dedupe URI 'sqlite:' needs a Kawa config (home) or an explicit path")
        return SQLiteDedupeStore(config.path("functions", "dedupe.sqlite"))
    return SQLiteDedupeStore(path)


dedupe_backends.register("sqlite", _build_sqlite)
dedupe_backends.register("memory", lambda uri, **_: MemoryDedupeStore())
dedupe_backends.register("none", lambda uri, **_: NullDedupeStore())


def open_dedupe(uri: str, config: Any = None) -> DedupeStore:
    """The dedupe store a URI names (``sqlite:[path]``, ``memory:``, ``none:``)."""
    return dedupe_backends.build(uri, config=config)
