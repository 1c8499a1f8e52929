"""``sql:<SQLAlchemy URL>`` — poll a table (source) and insert rows (sink): SQLite, PostgreSQL and any
database SQLAlchemy speaks.

``sql:sqlite:///orders.db?table=orders&column=id`` — Kawa's options (``table``, ``column``, ``key``,
``interval``, ``create``) are taken out of the query; the rest stays in the database URL
(``sql:postgresql+psycopg://kawa@db:5432/shop?table=orders&column=id&sslmode=require``).

Source: ``SELECT * FROM table WHERE column > :last ORDER BY column LIMIT :batch`` every ``interval``
(default ``1s``); ``column`` must grow with every new row (an identity/serial key, or an insertion time).
Progress = the last finished value, durable. Caveat of the pattern: rows committed later with a lower value
(long concurrent transactions) are missed — use an identity assigned at commit, or a topic.

Sink: inserts each message (a mapping, or a list of mappings) as rows, in one transaction per batch.
``key=col``: ``INSERT … ON CONFLICT (col) DO NOTHING`` (SQLite, PostgreSQL), so redelivered messages leave
one row. ``create=true`` creates a missing table from the first rows (``key`` as primary key). Fields
that are not columns are ignored; a constraint violation is a rejection (dead letter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from kawa.errors import InvalidRoute, MessageRejected, RouteError
from kawa.routes.components.base import OrderedTracker, RouteContext, option, parse_duration
from kawa.routes.message import Message, Token, decode_json_body
from kawa.routes.spec import EndpointSpec

_KAWA_OPTIONS = {"table", "column", "increment", "key", "interval", "create", "batch"}


def database_url(endpoint: EndpointSpec) -> str:
    url = endpoint.uri.split(":", 1)[1]
    rest = {k: v for k, v in endpoint.options.items() if k not in _KAWA_OPTIONS and isinstance(v, str)}
    return f"{url}?{urlencode(rest)}" if rest else url


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise InvalidRoute(f"cannot use database URL {url!r}: {exc}") from exc


def _table(engine: Any, name: str) -> Any:
    from sqlalchemy import MetaData, Table
    from sqlalchemy.exc import NoSuchTableError, OperationalError

    try:
        return Table(name, MetaData(), autoload_with=engine)
    except NoSuchTableError:
        return None
    except OperationalError as exc:
        raise RouteError(f"database unreachable: {exc}") from exc


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return date.fromisoformat(value["date"])
        if "decimal" in value:
            return Decimal(value["decimal"])
    return value


class SqlSource:
    exclusive = True

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.url = database_url(endpoint)
        self.table_name = option(endpoint, "table")
        self.column = option(endpoint, "column") or option(endpoint, "increment")
        if not self.table_name or not self.column:
            raise InvalidRoute(f"sql source {endpoint.uri!r} needs table= and column= (the incrementing column)")
        self.interval = parse_duration(option(endpoint, "interval", "1s"))
        self._engine: Any = None
        self._table: Any = None
        self._last: Any = None
        self._saved: Any = None
        self._tracker = OrderedTracker()
        self._next_poll = 0.0

    def open(self) -> None:
        self._engine = _engine(self.url)
        self._table = _table(self._engine, str(self.table_name))
        if self._table is None:
            raise RouteError(f"table {self.table_name!r} does not exist in {self._engine.url!r}; create it first")
        if self.column not in self._table.c:
            raise InvalidRoute(f"table {self.table_name!r} has no column {self.column!r}")
        self._saved = self.ctx.progress.get(self.ctx.route_id, "last")
        self._last = _decode(self._saved)

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        import time

        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        wait = self._next_poll - time.monotonic()
        if wait > 0 and self.ctx.stop.wait(min(wait, timeout)):
            return []
        if wait > timeout:
            return []
        self._next_poll = time.monotonic() + self.interval
        column = self._table.c[self.column]
        query = select(self._table).order_by(column).limit(max_messages)
        if self._last is not None:
            query = query.where(column > self._last)
        try:
            with self._engine.connect() as conn:
                rows = [dict(row._mapping) for row in conn.execute(query)]
        except SQLAlchemyError as exc:
            raise RouteError(f"polling {self.table_name!r} failed: {exc}") from exc
        out = []
        for row in rows:
            value = row[self.column]
            self._last = value
            self._tracker.add(value)
            out.append(
                Message(
                    body=row, id=f"{self.table_name}:{value}", source=f"kawa:sql:{self.table_name}",
                    headers={"table": self.table_name}, tokens=(value,),
                )
            )  # fmt: skip
        if len(rows) == max_messages:
            self._next_poll = 0.0  # more are waiting
        return out

    def ack(self, tokens: Iterable[Token]) -> None:
        for token in tokens:
            self._tracker.done(token)

    def commit(self) -> None:
        position, inclusive = self._tracker.commit_point()
        if not inclusive:
            return  # the earliest unfinished row bounds progress; only whole prefixes are saved
        encoded = _encode(position)
        if encoded != self._saved:
            self.ctx.progress.put(self.ctx.route_id, "last", encoded)
            self._saved = encoded

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


class SqlSink:
    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.url = database_url(endpoint)
        self.table_name = option(endpoint, "table")
        if not self.table_name:
            raise InvalidRoute(f"sql sink {endpoint.uri!r} needs table=")
        self.key = option(endpoint, "key")
        self.create = bool(option(endpoint, "create", False, bool))
        self._engine: Any = None
        self._table: Any = None

    def open(self) -> None:
        self._engine = _engine(self.url)
        self._table = _table(self._engine, str(self.table_name))
        if self._table is None and not self.create:
            raise RouteError(f"table {self.table_name!r} does not exist; create it or add create=true to the sink")

    def _create(self, rows: list[dict[str, Any]]) -> None:
        from sqlalchemy import JSON, Boolean, Column, Float, Integer, MetaData, Table, Text

        types: dict[str, Any] = {}
        for row in rows:
            for name, value in row.items():
                if name in types or value is None:
                    continue
                kind = type(value)
                types[name] = (
                    Boolean if kind is bool else Integer if kind is int else Float if kind is float
                    else JSON if kind in (dict, list) else Text
                )  # fmt: skip
        columns = [Column(n, t, primary_key=(n == self.key)) for n, t in types.items()]
        table = Table(str(self.table_name), MetaData(), *columns)
        table.create(self._engine, checkfirst=True)
        self._table = _table(self._engine, str(self.table_name))

    def write(self, messages: Sequence[Message]) -> None:
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        rows: list[dict[str, Any]] = []
        for message in messages:
            body = decode_json_body(message)
            items = body if isinstance(body, list) else [body]
            for item in items:
                if not isinstance(item, Mapping):
                    raise MessageRejected(f"sql sink: a row must be a mapping, got {type(item).__name__}")
                rows.append(dict(item))
        if not rows:
            return
        if self._table is None:
            self._create(rows)
        columns = set(self._table.c.keys())
        rows = [{k: v for k, v in row.items() if k in columns} for row in rows]
        try:
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows:  # executemany needs one set of columns per statement
                groups.setdefault(tuple(sorted(row)), []).append(row)
            with self._engine.begin() as conn:
                for group in groups.values():
                    conn.execute(self._insert(), group)
        except IntegrityError as exc:
            raise MessageRejected(f"sql sink: constraint violated in {self.table_name!r}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise RouteError(f"sql sink: insert into {self.table_name!r} failed: {exc}") from exc

    def _insert(self) -> Any:
        from sqlalchemy import insert

        dialect = self._engine.dialect.name
        if self.key and dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
            return dialect_insert(self._table).on_conflict_do_nothing(index_elements=[self.key])
        return insert(self._table)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
