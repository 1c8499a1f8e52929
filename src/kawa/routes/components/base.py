"""Endpoint components: the source and sink contracts, the route context, and the scheme registry.

A component serves one URI scheme (``file:``, ``bucket:``, ``topic:``, ``http:``, ``sql:``, ``replay:``,
``timer:``) and builds a :class:`Source` (``from:``), a :class:`Sink` (``to:`` and dead letters) or both.

Delivery contract, for every component:

- A source hands out messages with stable ids and ``tokens``; it makes progress durable in :meth:`Source.commit`
  only up to the first token not yet acknowledged, so a crash redelivers every unfinished message
  (at-least-once).
- A sink's :meth:`Sink.write` returns only when the messages are stored. Sinks that can be idempotent are
  (file names, object keys, table key columns); the others (topic, HTTP) carry the message's ``source`` + ``id``
  so that receivers deduplicate, as the CloudEvents spec intends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kawa.errors import InvalidRoute
from kawa.routes.message import Message, Token

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.log.base import EventLog
    from kawa.platform import Platform
    from kawa.routes.progress import ProgressStore
    from kawa.routes.spec import EndpointSpec


@dataclass
class RouteContext:
    """What components and processors of one route may use: config, shared backends, durable progress."""

    route_id: str
    config: KawaConfig
    progress: ProgressStore
    platform: Platform | Backends | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    counters: dict[str, int] = field(default_factory=dict)
    """Counts components keep for the route's status (``skipped_foreign``…); see :meth:`count`."""
    _log: EventLog | None = None
    _store: Any = None

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    @property
    def log(self) -> EventLog:
        if self.platform is not None:
            return self.platform.log
        if self._log is None:
            from kawa.log import open_log

            self._log = open_log(self.config.log.uri, self.config)
        return self._log

    @property
    def store(self) -> Any:
        """The object store (``kawa.store.open_store``), shared with the platform when there is one."""
        if self.platform is not None:
            return self.platform.store
        if self._store is None:
            from kawa.store import open_store  # type: ignore[attr-defined]

            self._store = open_store(self.config.store.uri, self.config, log=self.log)
        return self._store

    def home_path(self, *parts: str) -> Path:
        return self.config.path("routes", *parts)

    def key(self, key_file: str | None = None) -> bytes:
        """The route secret for keyed hashing: ``key_file`` or ``<home>/routes/keys/default.key``."""
        from kawa.routes.keys import load_key

        return load_key(key_file or self.home_path("keys", "default.key"))

    def close(self) -> None:
        if self._store is not None and hasattr(self._store, "close"):
            self._store.close()
        if self._log is not None:
            self._log.close()
        self._store = self._log = None


class Source(Protocol):
    """Where a route's messages come from."""

    exclusive: bool
    """True when two runners of one route would read the same messages (files, tables, replays): the
    runner then holds a per-route lock. False for topics (a consumer group shares partitions)."""

    def open(self) -> None: ...

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` new messages, waiting at most ``timeout`` seconds for the first."""
        ...

    def ack(self, tokens: Iterable[Token]) -> None:
        """These source positions are finished (at the sink or the dead letter)."""
        ...

    def commit(self) -> None:
        """Make acknowledged progress durable (up to the first unacknowledged position)."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where a route's messages go."""

    def open(self) -> None: ...

    def write(self, messages: Sequence[Message]) -> None:
        """Store ``messages``; durable when it returns. Raise to have the runner redeliver."""
        ...

    def close(self) -> None: ...


class OrderedTracker:
    """Commit point over positions that are handed out in increasing order but may finish out of order."""

    def __init__(self) -> None:
        self._pending: dict[Any, None] = {}  # insertion-ordered
        self._last: Any = None

    def add(self, position: Any) -> None:
        self._pending[position] = None
        self._last = position

    def done(self, position: Any) -> None:
        self._pending.pop(position, None)

    def commit_point(self) -> tuple[Any, bool]:
        """``(position, inclusive)``: everything before — and, when ``inclusive``, at — position is finished.
        ``(None, False)`` when nothing was handed out."""
        if self._pending:
            return next(iter(self._pending)), False
        return self._last, self._last is not None

    @property
    def pending(self) -> int:
        return len(self._pending)


_SOURCES: dict[str, str] = {
    "file": "kawa.routes.components.files:FileSource",
    "bucket": "kawa.routes.components.bucket:BucketSource",
    "topic": "kawa.routes.components.topic:TopicSource",
    "http": "kawa.routes.components.http:HttpSource",
    "https": "kawa.routes.components.http:HttpSource",
    "sql": "kawa.routes.components.sql:SqlSource",
    "replay": "kawa.routes.components.replay:ReplaySource",
    "timer": "kawa.routes.components.timer:TimerSource",
}
_SINKS: dict[str, str] = {
    "file": "kawa.routes.components.files:FileSink",
    "bucket": "kawa.routes.components.bucket:BucketSink",
    "topic": "kawa.routes.components.topic:TopicSink",
    "http": "kawa.routes.components.http:HttpSink",
    "https": "kawa.routes.components.http:HttpSink",
    "sql": "kawa.routes.components.sql:SqlSink",
}


def register_component(scheme: str, *, source: str | None = None, sink: str | None = None) -> None:
    """Add a component: import strings of classes built as ``cls(endpoint, ctx)``."""
    if source:
        _SOURCES[scheme] = source
    if sink:
        _SINKS[scheme] = sink


def known_components() -> dict[str, list[str]]:
    return {"sources": sorted(_SOURCES), "sinks": sorted(_SINKS)}


def _load(table: dict[str, str], role: str, endpoint: EndpointSpec, ctx: RouteContext) -> Any:
    import importlib

    scheme = endpoint.scheme
    target = table.get(scheme)
    if target is None:
        known = ", ".join(f"{s}:" for s in sorted(table))
        raise InvalidRoute(
            f"route {ctx.route_id!r}: no {role} component for {endpoint.uri!r} (scheme {scheme!r}); "
            f"known {role}s: {known}"
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(endpoint, ctx)


def build_source(endpoint: EndpointSpec, ctx: RouteContext) -> Source:
    return _load(_SOURCES, "source", endpoint, ctx)  # type: ignore[no-any-return]


def build_sink(endpoint: EndpointSpec, ctx: RouteContext) -> Sink:
    return _load(_SINKS, "sink", endpoint, ctx)  # type: ignore[no-any-return]


def option(endpoint: EndpointSpec, name: str, default: Any = None, cast: Any = None) -> Any:
    """An endpoint option (``a-b`` and ``a_b`` spellings), cast with ``cast`` and a clear error."""
    for spelling in (name, name.replace("-", "_"), name.replace("_", "-")):
        if spelling in endpoint.options:
            value = endpoint.options[spelling]
            break
    else:
        return default
    if cast is None or value is None:
        return value
    try:
        if cast is bool and isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return cast(value)
    except (TypeError, ValueError) as exc:
        raise InvalidRoute(f"endpoint {endpoint.uri!r}: option {name}={value!r} is invalid: {exc}") from exc


def parse_duration(value: Any) -> float:
    """``1.5``, ``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"`` → seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    try:
        return float(text)
    except ValueError:
        raise InvalidRoute(f"{value!r} is not a duration; write e.g. 500ms, 5s, 2m or 1h") from None


def path_of(uri: str) -> Path:
    """The path part of ``file:/dir``, ``file:///dir``, ``file:./rel`` or ``replay:data.csv``."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    if rest.startswith("//"):  # file:///abs/dir → /abs/dir; file://rel/dir → rel/dir
        rest = rest[2:]
    return Path(rest) if rest else Path(".")
