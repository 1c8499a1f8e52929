"""``timer:NAME`` — a message every ``period`` (default ``1s``), ``repeat`` times (default forever), after
``delay``. Body: ``{"timer": NAME, "count": n, "time": ISO-8601}``. Nothing to make durable: a restarted
timer starts counting again (ids carry the start time, so they never collide)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from kawa.routes.components.base import RouteContext, option, parse_duration
from kawa.routes.message import Message, Token
from kawa.routes.spec import EndpointSpec


class TimerSource:
    exclusive = True

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.name = endpoint.uri.split(":", 1)[1].lstrip("/") or "timer"
        self.period = parse_duration(option(endpoint, "period", "1s"))
        self.repeat = option(endpoint, "repeat", None, int)
        self.delay = parse_duration(option(endpoint, "delay", 0))
        self._count = 0
        self._next = 0.0
        self._run = ""

    def open(self) -> None:
        self._next = time.monotonic() + self.delay
        self._run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        if self.repeat is not None and self._count >= self.repeat:
            self.ctx.stop.wait(timeout)
            return []
        wait = self._next - time.monotonic()
        if wait > timeout:
            self.ctx.stop.wait(timeout)
            return []
        if wait > 0 and self.ctx.stop.wait(wait):
            return []
        self._count += 1
        self._next += self.period
        now = datetime.now(UTC)
        body = {"timer": self.name, "count": self._count, "time": now.isoformat()}
        return [
            Message(body=body, id=f"{self.name}-{self._run}-{self._count}", source=f"kawa:timer:{self.name}", time=now)
        ]

    def ack(self, tokens: Iterable[Token]) -> None:
        pass

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass
