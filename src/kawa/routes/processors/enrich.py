"""``enrich`` step (content enricher): look a message up in a table and add what was found.

``enrich: {table: URI, on: COLUMN, key: FIELD-OR-EXPRESSION, into: FIELD, missing: keep|drop|reject}``

- ``table`` — ``file:customers.csv`` (CSV, JSON list or Parquet; reread when the file changes),
  ``sql:<url>?table=customers`` (reread every ``refresh``, default ``60s``), or ``topic:customers`` (a
  changelog: the latest JSON value per key — the record key, or the ``on`` field of the value — kept
  current while the route runs; a null value deletes).
- ``on`` — the lookup column of the table (default ``id``); ``key`` — the message's field name or an
  expression giving the value to look up (default: the ``on`` name).
- ``into`` — put the row under this field; without it the row's fields are merged into the body (the
  body's own fields win).
- ``missing`` — what to do when nothing matches: ``keep`` the message unchanged (default), ``drop`` it, or
  ``reject`` it (dead letter).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.expr import Expression
from kawa.routes.message import Message, decode_json_body

if TYPE_CHECKING:
    from kawa.log.base import Consumer
    from kawa.routes.components.base import RouteContext


class Enrich:
    def __init__(self, options: Any, ctx: RouteContext) -> None:
        from kawa.routes.components.base import parse_duration, path_of
        from kawa.routes.spec import EndpointSpec

        if not isinstance(options, Mapping) or not options.get("table"):
            raise InvalidRoute("enrich needs table: (file:, sql: or topic: URI) and on: (lookup column)")
        self.ctx = ctx
        self.endpoint = EndpointSpec.parse(options["table"])
        self.on = str(options.get("on", "id"))
        key = str(options.get("key", self.on))
        self.key_field = key if key.isidentifier() else None
        self.key_expr = None if self.key_field else Expression(key)
        self.into = options.get("into")
        self.missing = str(options.get("missing", "keep"))
        if self.missing not in ("keep", "drop", "reject"):
            raise InvalidRoute(f"enrich: missing must be keep, drop or reject, got {self.missing!r}")
        self.refresh = parse_duration(options.get("refresh", "60s"))
        self.kind = self.endpoint.scheme
        if self.kind not in ("file", "sql", "topic"):
            raise InvalidRoute(f"enrich: table {self.endpoint.uri!r} must be a file:, sql: or topic: URI")
        self.path = path_of(self.endpoint.uri) if self.kind == "file" else None
        self._rows: dict[str, dict[str, Any]] = {}
        self._stamp: Any = None
        self._loaded_at = 0.0
        self._consumer: Consumer | None = None

    # --- loading ----------------------------------------------------------------------------------

    def _index(self, rows: list[Any]) -> dict[str, dict[str, Any]]:
        return {str(r[self.on]): dict(r) for r in rows if isinstance(r, Mapping) and r.get(self.on) is not None}

    def _load_file(self) -> None:
        assert self.path is not None
        try:
            stat = self.path.stat()
        except FileNotFoundError as exc:
            raise InvalidRoute(f"enrich: lookup file {self.path} does not exist") from exc
        stamp = (stat.st_size, stat.st_mtime_ns)
        if stamp == self._stamp:
            return
        suffix = self.path.suffix.lower()
        if suffix in (".parquet", ".pq", ".csv", ".tsv"):
            from kawa.routes.replay import BadRow, iter_rows

            rows: list[Any] = [r for _, r in iter_rows(self.path) if not isinstance(r, BadRow)]
        else:
            data = json.loads(self.path.read_text())
            rows = data if isinstance(data, list) else list(data.values()) if isinstance(data, Mapping) else []
        self._rows, self._stamp = self._index(rows), stamp

    def _load_sql(self) -> None:
        if time.monotonic() - self._loaded_at < self.refresh and self._loaded_at:
            return
        from sqlalchemy import select

        from kawa.routes.components.sql import _engine, _table, database_url

        engine = _engine(database_url(self.endpoint))
        try:
            table = _table(engine, str(self.endpoint.options.get("table")))
            if table is None:
                raise InvalidRoute(f"enrich: table {self.endpoint.options.get('table')!r} does not exist")
            with engine.connect() as conn:
                self._rows = self._index([dict(r._mapping) for r in conn.execute(select(table))])
        finally:
            engine.dispose()
        self._loaded_at = time.monotonic()

    def _load_topic(self) -> None:
        from kawa.log.base import TopicSpec

        if self._consumer is None:
            topic = self.endpoint.uri.split(":", 1)[1].lstrip("/")
            self.ctx.log.create_topic(TopicSpec(topic), exist_ok=True)
            # A private group that never commits: every start reads the whole changelog.
            group = f"enrich-{self.ctx.route_id}-{uuid.uuid4().hex[:8]}"
            self._consumer = self.ctx.log.consumer(group, [topic], auto_offset_reset="earliest")
            timeout = 1.0
        else:
            timeout = 0.0
        while True:
            records = self._consumer.poll(timeout=timeout, max_records=1000)
            if not records:
                return
            timeout = 0.0
            for record in records:
                key = record.key.decode() if record.key is not None else None
                value = json.loads(record.value) if record.value else None
                if isinstance(value, Mapping) and key is None and value.get(self.on) is not None:
                    key = str(value[self.on])
                if key is None:
                    continue
                if value is None:
                    self._rows.pop(key, None)
                elif isinstance(value, Mapping):
                    self._rows[key] = dict(value)

    # --- processing -------------------------------------------------------------------------------

    def process(self, message: Message) -> list[Message]:
        {"file": self._load_file, "sql": self._load_sql, "topic": self._load_topic}[self.kind]()
        body = decode_json_body(message)
        if not isinstance(body, Mapping):
            raise MessageRejected(f"enrich: body must be a record, got {type(body).__name__}")
        current = message.derive(body)
        value = body.get(self.key_field) if self.key_field else self.key_expr.evaluate(current)  # type: ignore[union-attr]
        row = self._rows.get(str(value)) if value is not None else None
        if row is None:
            if self.missing == "drop":
                return []
            if self.missing == "reject":
                raise MessageRejected(f"enrich: no row with {self.on}={value!r}")
            return [current]
        enriched = {**body, str(self.into): row} if self.into else {**row, **body}
        return [message.derive(enriched)]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
