"""``replay:FILE`` — a CSV or Parquet file played as a stream (source only).

Options: ``time-column``, ``speed`` (event-time multiplier), ``max-rate`` (rows/s), ``key-column``,
``infer`` (CSV: numbers from text). Without ``speed``/``max-rate`` rows flow as fast as the route takes
them. Progress = the next row index, durable: a restarted route resumes after the last finished row (the
pacing re-anchors there). Undecodable rows are dead-lettered with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from kawa.routes.components.base import OrderedTracker, RouteContext, option, path_of
from kawa.routes.message import Message, Token
from kawa.routes.replay import BadRow, Pacer, iter_rows, row_event
from kawa.routes.spec import EndpointSpec


class ReplaySource:
    exclusive = True

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.path = path_of(endpoint.uri)
        self.time_column = option(endpoint, "time-column")
        self.key_column = option(endpoint, "key-column")
        self.infer = bool(option(endpoint, "infer", False, bool))
        speed = option(endpoint, "speed", None, float)
        self.pacer = Pacer(
            speed=speed if self.time_column else None, max_rate=option(endpoint, "max-rate", None, float)
        )
        self._rows: Iterator[tuple[int, dict[str, Any] | BadRow]] | None = None
        self._next: tuple[int, dict[str, Any] | BadRow, float] | None = None
        self._tracker = OrderedTracker()
        self._saved: int | None = None

    def open(self) -> None:
        start = int(self.ctx.progress.get(self.ctx.route_id, "row", 0))
        self._saved = start
        self._rows = iter_rows(self.path, start, infer=self.infer)

    def _message(self, index: int, row: dict[str, Any] | BadRow) -> Message:
        source = f"kawa:replay:{self.path.name}"
        if isinstance(row, BadRow):
            return Message(
                body=row.raw, id=f"{self.path.name}:{index}", source=source, headers={"row": index},
                tokens=(index,), error=f"row {index}: {row.reason}",
            )  # fmt: skip
        event_time = row_event(row, self.time_column)
        key = row.get(self.key_column) if self.key_column else None
        return Message(
            body=row, id=f"{self.path.name}:{index}", source=source, headers={"row": index},
            key=None if key is None else str(key), tokens=(index,),
            time=datetime.fromtimestamp(event_time, UTC) if event_time is not None else None,
        )  # fmt: skip

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        assert self._rows is not None
        deadline = time.monotonic() + timeout
        out: list[Message] = []
        while len(out) < max_messages:
            if self._next is None:
                item = next(self._rows, None)
                if item is None:
                    if not out:
                        self.ctx.stop.wait(max(0.0, deadline - time.monotonic()))
                    break
                index, row = item
                event_time = None if isinstance(row, BadRow) else row_event(row, self.time_column)
                self._next = (index, row, self.pacer.due(event_time))
            index, row, due = self._next
            now = time.monotonic()
            if due > now:
                if out or due > deadline:
                    if not out:
                        self.ctx.stop.wait(max(0.0, deadline - now))
                    break
                if self.ctx.stop.wait(due - now):
                    break
            self._next = None
            self.pacer.released(time.monotonic())
            self._tracker.add(index)
            out.append(self._message(index, row))
        return out

    def ack(self, tokens: Iterable[Token]) -> None:
        for token in tokens:
            self._tracker.done(token)

    def commit(self) -> None:
        position, inclusive = self._tracker.commit_point()
        if position is None:
            return
        next_row = int(position) + 1 if inclusive else int(position)
        if next_row != self._saved:
            self.ctx.progress.put(self.ctx.route_id, "row", next_row)
            self._saved = next_row

    def close(self) -> None:
        self._rows = None
