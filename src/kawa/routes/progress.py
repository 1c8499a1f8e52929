"""Durable route progress (what a source has finished: last polled value, file ledger, row index).

A SQLite file under the Kawa home (``routes/progress.db``), shared by every process on the machine (WAL
mode) and surviving crashes: :meth:`ProgressStore.put` returns only after the value is committed. Topic
sources keep their progress in the event log's consumer groups instead. For routes spread over several
machines, point sources at shared state (a Kafka topic, a database) — see docs/routes.md.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kawa.errors import RouteError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS progress (route TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (route, name)) WITHOUT ROWID"
)


class ProgressStore:
    """Key/value progress per route. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise RouteError(f"cannot open route progress database {self.path}: {exc}") from exc

    def get(self, route: str, name: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM progress WHERE route=? AND name=?", (route, name)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, route: str, name: str, value: Any) -> None:
        self.put_many(route, [(name, value)])

    def put_many(self, route: str, items: Iterable[tuple[str, Any]]) -> None:
        """Store several values atomically."""
        rows = [(route, name, json.dumps(value)) for name, value in items]
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO progress (route, name, value) VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise RouteError(f"cannot save progress of route {route!r}: {exc}") from exc

    def names(self, route: str, prefix: str = "") -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name FROM progress WHERE route=? AND name LIKE ? ORDER BY name",
                (route, prefix.replace("%", r"\%") + "%"),
            ).fetchall()
        return [r[0] for r in rows]

    def clear(self, route: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM progress WHERE route=?", (route,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
