"""The results table: one row per assessed image, in SQLite by default or PostgreSQL by URL.

SQL goes through SQLAlchemy Core, so every value is a bound parameter (no string-built SQL). Each row is
keyed by the input event's :class:`~kawa.events.EventRef` (columns ``event_source`` + ``event_id``) and the
object key: a redelivered event inserts nothing the second time. SQLite runs in WAL mode with a busy timeout
so several workers (threads or processes) can write to one file.

Tables made before the EventRef have no ``event_source`` column and keep ``source#id`` in ``event_id``: opening
one adds the column (``''`` in old rows, whose :attr:`ResultRow.ref` is then read from the old form) and a
unique index on the ref and the key. Their old unique constraint on ``event_id`` + key stays (SQLite cannot
drop it), which only matters for two events with the same id from different sources for one object.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import KawaError
from kawa.events.ref import EventRef

if TYPE_CHECKING:
    from kawa.apps.xray.events import XrayAssessed

try:  # SQLAlchemy is imported at module import: the results DB is only opened by the app's functions.
    import sqlalchemy as sa
except ImportError as exc:  # pragma: no cover - exercised only without the xray extra
    raise KawaError("the X-ray results DB needs SQLAlchemy: pip install 'kawa[xray]'") from exc


@dataclass(frozen=True)
class ResultRow:
    """One assessment. ``latency_ms``: inside the function (fetch → stored outputs); ``e2e_ms``: from the
    upload's notification time to this row."""

    time: float
    bucket: str
    object_key: str
    processed_key: str
    model_name: str
    model_version: int
    risk: float
    label: str
    latency_ms: float
    e2e_ms: float | None
    event_id: str
    event_source: str = ""
    """With ``event_id``, the input event's :class:`~kawa.events.EventRef`; ``""`` in rows written before it
    (their ``event_id`` is ``source#id``)."""

    @classmethod
    def of(cls, result: XrayAssessed) -> ResultRow:
        """The row of a result event's data (which must carry its input event's ref)."""
        if result.event is None:
            raise KawaError("an X-ray result needs the EventRef of its input event to be stored as a row")
        return cls(
            time=result.time,
            bucket=result.bucket,
            object_key=result.key,
            processed_key=result.processed_key,
            model_name=result.model,
            model_version=result.model_version,
            risk=result.risk,
            label=result.label,
            latency_ms=result.latency_ms,
            e2e_ms=result.e2e_ms,
            event_id=result.event.id,
            event_source=result.event.source,
        )

    @property
    def ref(self) -> EventRef | None:
        """The input event's ref; for an old row, read from its ``source#id`` (None when it has no ``#``)."""
        if self.event_source:
            return EventRef(self.event_source, self.event_id)
        source, sep, id = self.event_id.partition("#")
        return EventRef(source, id) if sep and source and id else None


_metadata = sa.MetaData()
results_table = sa.Table(
    "xray_results",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False, index=True),
    sa.Column("bucket", sa.String(255), nullable=False),
    sa.Column("object_key", sa.String(1024), nullable=False),
    sa.Column("processed_key", sa.String(1024), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("risk", sa.Float, nullable=False),
    sa.Column("label", sa.String(32), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("e2e_ms", sa.Float, nullable=True),
    sa.Column("event_id", sa.String(512), nullable=False),
    sa.Column("event_source", sa.String(1024), nullable=False, server_default=""),
    sa.UniqueConstraint("event_source", "event_id", "object_key", name="uq_xray_results_ref_object"),
)


_INSERT = results_table.insert()  # built once: values travel as bound parameters


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class ResultsDB:
    """Insert and read assessment rows. Thread-safe (a pooled engine); open one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(url, future=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise KawaError(
                f"cannot open the results DB {url!r}: {exc}; use sqlite:///path/results.db or "
                "postgresql+psycopg://user@host/db (with its driver installed)"
            ) from exc
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            _create(self.engine)
            _migrate(self.engine)
        except sa.exc.OperationalError as exc:
            raise KawaError(f"cannot reach the results DB {self.engine.url!r}: {exc.orig}") from exc

    def record(self, row: ResultRow) -> bool:
        """Insert ``row``; False when this event's row for this object is already there."""
        try:
            with self.engine.begin() as conn:
                conn.execute(_INSERT, asdict(row))
        except sa.exc.IntegrityError:
            return False
        return True

    def count(self, prefix: str = "") -> int:
        """Rows whose object key starts with ``prefix``."""
        query = sa.select(sa.func.count()).select_from(results_table)
        if prefix:
            query = query.where(results_table.c.object_key.startswith(prefix, autoescape=True))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def rows(self, *, limit: int | None = None, newest_first: bool = False) -> list[ResultRow]:
        query = sa.select(results_table).order_by(results_table.c.id.desc() if newest_first else results_table.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def iter_rows(self, batch: int = 1000) -> Iterator[ResultRow]:
        last = 0
        while True:
            query = sa.select(results_table).where(results_table.c.id > last).order_by(results_table.c.id)
            with self.engine.connect() as conn:
                chunk = list(conn.execute(query.limit(batch)).mappings())
            if not chunk:
                return
            last = int(chunk[-1]["id"])
            yield from (_row(r) for r in chunk)

    def summary(self, prefix: str = "") -> dict[str, Any]:
        """Counts per label and per model version, and latency percentiles, of rows whose object key starts
        with ``prefix``."""
        t = results_table
        where = t.c.object_key.startswith(prefix, autoescape=True) if prefix else sa.true()
        with self.engine.connect() as conn:
            labels: dict[Any, Any] = dict(
                conn.execute(sa.select(t.c.label, sa.func.count()).where(where).group_by(t.c.label)).all()
            )
            versions: dict[Any, Any] = dict(
                conn.execute(
                    sa.select(t.c.model_version, sa.func.count()).where(where).group_by(t.c.model_version)
                ).all()
            )
            e2e = sorted(v for (v,) in conn.execute(sa.select(t.c.e2e_ms).where(where)) if v is not None)
        return {
            "count": sum(labels.values()),
            "labels": {str(k): int(v) for k, v in labels.items()},
            "versions": {int(k): int(v) for k, v in versions.items()},
            "e2e_p50_ms": percentile(e2e, 50),
            "e2e_p99_ms": percentile(e2e, 99),
        }

    def close(self) -> None:
        self.engine.dispose()


def _create(engine: sa.engine.Engine) -> None:
    """Create the table when it is missing. Two processes opening a new DB at once can both see no table;
    the one that loses the race gets "already exists", which means the table is there: check again."""
    try:
        _metadata.create_all(engine)
    except sa.exc.OperationalError as exc:
        if "already exists" not in str(exc.orig):
            raise
        _metadata.create_all(engine)  # checkfirst: now finds the winner's table and creates nothing


def _migrate(engine: sa.engine.Engine) -> None:
    """Bring a table made before the EventRef up to date: the ``event_source`` column and its unique index."""
    columns = {c["name"] for c in sa.inspect(engine).get_columns(results_table.name)}
    if "event_source" in columns:
        return
    try:
        with engine.begin() as conn:  # fixed DDL, no values: nothing to bind
            conn.execute(sa.text(
                f"ALTER TABLE {results_table.name} ADD COLUMN event_source VARCHAR(1024) NOT NULL DEFAULT ''"
            ))
            conn.execute(sa.text(
                f"CREATE UNIQUE INDEX IF NOT EXISTS uq_xray_results_ref_object "
                f"ON {results_table.name} (event_source, event_id, object_key)"
            ))
    except sa.exc.DBAPIError:
        # Another process migrated the table at the same moment: fine when the column is there now.
        if "event_source" not in {c["name"] for c in sa.inspect(engine).get_columns(results_table.name)}:
            raise


def _row(mapping: Any) -> ResultRow:
    return ResultRow(**{k: mapping[k] for k in ResultRow.__dataclass_fields__})


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return float(sorted_values[rank])


_open: dict[str, ResultsDB] = {}
_open_lock = threading.Lock()


def shared_results_db(url: str) -> ResultsDB:
    """One :class:`ResultsDB` per URL per process (the function's replicas share its connection pool)."""
    with _open_lock:
        db = _open.get(url)
        if db is None:
            db = _open[url] = ResultsDB(url)
        return db


def close_shared() -> None:
    with _open_lock:
        for db in _open.values():
            db.close()
        _open.clear()
