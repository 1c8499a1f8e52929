"""An app's board for one principal, built generically from its :class:`~kawa.apps.board.BoardSpec`.

Each panel of the spec becomes a :class:`~kawa.portal.boards.Panel` that takes its action from the spec
(``action``) and names the endpoint that owns its data (by kind); the board built for a principal holds only
the panels their role may see, and every panel reads the same snapshot (one refresh of the sampler). PHI:
objects of buckets not declared PHI-free — their thumbnails, links and keys — need ``phi.read``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kawa.apps.board import Counters, FlowGraph, ImageStrip, Table, TimeSeries
from kawa.errors import ConfigError
from kawa.portal.apps import AppNotRunning, find_app
from kawa.portal.boards import Board, Panel
from kawa.portal.permissions import Action
from kawa.portal.sources.appboard import BoardSnapshot
from kawa.portal.sources.events import EventRow, field_value
from kawa.portal.views import graph

if TYPE_CHECKING:
    from kawa.apps.board import BoardSpec
    from kawa.apps.board import Panel as PanelSpec
    from kawa.portal.apps import AppView
    from kawa.portal.auth import Principal
    from kawa.portal.runtime import Portal

BUCKETS_S = (2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)  # the smallest giving at most ~40 bars is used
KEY_FIELDS = ("key", "object", "object_key", "source_key", "processed_key", "output_key")
"""Fields of an event naming an object: an image is joined to the events naming its key."""
DEAD_LETTERS = "dead_letters"
META = ("app", "title", "refreshed_at", "panels")

ENDPOINTS: dict[type, tuple[str, str]] = {
    # The endpoint that owns each kind's data (its action must be the panel's; tests/portal/test_boards.py).
    Counters: ("GET", "/api/topics"),  # topic sizes and bucket counts are listed to every role
    ImageStrip: ("GET", "/api/buckets/{bucket}/objects"),  # per bucket: phi.read unless PHI-free
    Table: ("GET", "/api/apps/{app}/events/{topic}"),
    TimeSeries: ("GET", "/api/apps/{app}/events/{topic}"),
    FlowGraph: ("GET", "/api/overview"),
}
DEAD_LETTERS_ENDPOINT = ("GET", "/api/deadletters/{topic}/records")


def thumb_url(bucket: str, key: str, size: int = 160) -> str:
    return f"/api/thumbnails/{quote(bucket)}/{quote(key)}?size={size}"


def object_url(bucket: str, key: str) -> str:
    return f"/api/buckets/{quote(bucket)}/objects/{quote(key)}"


def panel_action(spec: PanelSpec) -> Action:
    """The spec's ``action`` string as an :class:`Action` (``"view"`` or a value such as ``"deadletters.read"``)."""
    value = "portal.view" if spec.action == "view" else spec.action
    try:
        return Action(value)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise ConfigError(f"board panel {spec.name!r} names the action {spec.action!r}: use one of {known}") from None


@dataclass(frozen=True)
class BoardContext:
    """What the panels of one build read: one snapshot, and whether the principal may read PHI."""

    portal: Portal
    app: AppView
    spec: BoardSpec
    snapshot: BoardSnapshot
    phi: bool

    def visible(self, bucket: str) -> bool:
        return self.phi or self.portal.store.phi.phi_free(bucket)


def board_of(spec: BoardSpec) -> Board[BoardContext]:
    """The panels of ``spec``, each with its action and owning endpoint; plus the dead letters of
    ``spec.dead_letter_topics`` (for roles with ``deadletters.read``)."""
    panels: list[Panel[BoardContext]] = []
    for p in spec.panels:
        build = _BUILDERS[type(p)]
        panels.append(Panel(p.name, (p.name,), panel_action(p), ENDPOINTS[type(p)], _bind(build, p)))
    if spec.dead_letter_topics:
        action = Action.DEADLETTERS_READ
        panels.append(Panel(DEAD_LETTERS, (DEAD_LETTERS,), action, DEAD_LETTERS_ENDPOINT, _dead_letters))
    names = [p.name for p in panels]
    clash = {n for n in names if names.count(n) > 1 or n in META}
    if clash:
        raise ConfigError(f"board {spec.title!r} has panels named {sorted(clash)}: give each panel its own name")
    return Board(spec.title, tuple(panels))


def _bind(build: Callable[[Any, BoardContext], dict[str, Any]], spec: Any) -> Callable[[BoardContext], dict[str, Any]]:
    return lambda c: {spec.name: build(spec, c)}


def app_board(portal: Portal, principal: Principal, name: str) -> dict[str, Any]:
    """The board of app ``name`` for ``principal``; built once per sample and role, however many browsers
    watch. :class:`~kawa.portal.apps.AppNotRunning` when no such app (with a board) runs here."""
    app = find_app(portal.platform, name)
    spec = app.board
    if spec is None:
        raise AppNotRunning(f"the app {name!r} declares no board: its buckets and topics are on the overview")
    key = (portal.sampler.version, principal.user.role.value, name)
    cache = portal.board_cache
    with portal.board_lock:
        cached = cache.get(key)
    if cached is not None:
        return cached
    live = portal.boards.get(name)
    snapshot = live.snapshot() if live is not None and live.spec == spec else BoardSnapshot()
    context = BoardContext(portal, app, spec, snapshot, principal.can(Action.PHI_READ))
    built = board_of(spec).build(
        principal.user.role, context, app=name, title=spec.title, refreshed_at=snapshot.taken_at
    )
    with portal.board_lock:
        for stale in [k for k in cache if k[0] < key[0]]:
            del cache[stale]
        cache[key] = built
    return built


# --- panels ----------------------------------------------------------------------------------------


def _counters(p: Counters, c: BoardContext) -> dict[str, Any]:
    values = c.snapshot.counts.get(p.name, {})
    return {
        "kind": "counters",
        "title": p.title,
        "counts": [{"label": n.label, "title": n.title, "value": values.get(n.label, 0)} for n in p.counts],
    }


def captions(keys: Sequence[str]) -> list[str]:
    """The part of each key that tells it apart from the others: its shortest suffix of whole path
    segments that no other key shares (``a/run-7/scan-01.png`` → ``scan-01.png``; keys alike but for a
    folder keep that folder: ``p1/img.png``, ``p2/img.png``)."""
    parts = [k.split("/") for k in keys]
    longest = max((len(p) for p in parts), default=1)
    for depth in range(1, longest + 1):
        out = ["/".join(p[-depth:]) for p in parts]
        if len(set(out)) == len(set(keys)):
            return out
    return list(keys)


def join_events(rows: Sequence[EventRow]) -> dict[str, EventRow]:
    """Object key → the newest event naming it in any key field (an event names the object it is about and,
    often, what was made of it: both keys find it)."""
    out: dict[str, EventRow] = {}
    for row in rows:  # oldest first: a newer event about the same object wins
        for name in KEY_FIELDS:
            value = row.data.get(name)
            if isinstance(value, str) and value:
                out[value] = row
    return out


def _images(p: ImageStrip, c: BoardContext) -> dict[str, Any]:
    listing = c.snapshot.listings.get(p.bucket)
    shown = c.visible(p.bucket)
    items = list(listing.newest[: p.limit]) if listing is not None and shown else []
    joined = join_events(c.snapshot.events.get(p.results_topic, ())) if p.results_topic else {}
    out = []
    for item, caption in zip(items, captions([i["key"] for i in items]), strict=True):
        event = joined.get(item["key"])
        marker = p.marker
        marked = marker is not None and event is not None and str(field_value(event.data, marker.field)) == marker.value
        out.append(
            dict(
                item,
                caption=caption,
                thumbnail=thumb_url(p.bucket, item["key"]),
                url=object_url(p.bucket, item["key"]),
                event_id=event.id if event is not None else None,
                marked=marked,
                marker=(marker.label or marker.value) if marked and marker is not None else None,
            )
        )
    return {"kind": "images", "title": p.title, "bucket": p.bucket, "phi_hidden": not shown, "items": out}


def hidden_fields(data: Mapping[str, Any], visible: Callable[[str], bool]) -> set[str]:
    """Key fields of an event naming objects of a bucket that is not ``visible`` (``bucket``/``key`` and
    ``object``, ``<x>_bucket``/``<x>_key``)."""
    hidden = set()
    for name, value in data.items():
        if (name == "bucket" or name.endswith("_bucket")) and isinstance(value, str) and not visible(value):
            prefix = name.removesuffix("bucket")
            hidden.update({f"{prefix}key", f"{prefix}object"})
            if not prefix:
                hidden.update({"object", "object_key", "source_key"})
    return hidden


def _table(p: Table, c: BoardContext) -> dict[str, Any]:
    # Newest first by the event's own time (arrival order breaks ties): a late redelivery is not "latest".
    rows = sorted(reversed(c.snapshot.events.get(p.topic, ())), key=lambda r: r.time, reverse=True)[: p.limit]
    out = []
    for row in rows:
        hidden = hidden_fields(row.data, c.visible)
        cells = {
            col.field: None if col.field in hidden else _cell(row, col.field)
            for col in p.columns
        }
        link = None
        bucket = row.data.get(p.link_bucket_field) if p.link_bucket_field else None
        key = row.data.get(p.link_key_field) if p.link_key_field else None
        if isinstance(bucket, str) and isinstance(key, str) and c.visible(bucket):
            link = {"bucket": bucket, "key": key, "url": object_url(bucket, key), "thumbnail": thumb_url(bucket, key)}
        out.append({"id": row.id, "time": row.time, "cells": cells, "link": link})
    return {
        "kind": "table",
        "title": p.title,
        "columns": [{"field": col.field, "title": col.title, "format": col.format} for col in p.columns],
        "rows": out,
    }


def _cell(row: EventRow, name: str) -> Any:
    if name == "time":
        return row.time
    value = field_value(row.data, name)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def split_value(row: EventRow, split_by: str | None) -> str:
    if split_by is None:
        return "total"
    value = field_value(row.data, split_by)
    return "unknown" if value is None else str(value)


def bucket_for(span: float) -> float:
    return next((b for b in BUCKETS_S if span / b <= 40), BUCKETS_S[-1])


def placed_at(row: EventRow, time_field: str | None) -> float:
    """Where ``row`` goes on a time axis (see :class:`~kawa.apps.board.TimeSeries`)."""
    if time_field == "@received":
        return row.received or row.time
    if time_field is not None:
        value = row.data.get(time_field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return row.time


def series(rows: Sequence[EventRow], split_by: str | None, span_s: float, now: float,
           time_field: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Events per time bucket since the first event of the last ``span_s`` (a young pipeline fills the
    chart), split by ``split_by``; ``totals`` counts the same events by that field."""
    if time_field is not None:
        rows = [replace(r, time=placed_at(r, time_field)) for r in rows]
    recent = [r for r in rows if r.time >= now - span_s]
    first = min((r.time for r in recent), default=now)
    size = bucket_for(now - first)
    start = math.floor(max(now - span_s, first - 2 * size) / size) * size
    points: dict[float, Counter[str]] = {}
    for row in recent:
        t = math.floor(row.time / size) * size
        points.setdefault(t, Counter())[split_value(row, split_by)] += 1
    out, t = [], start
    while t <= now:
        split = points.get(t, Counter())
        out.append({"t": t, "count": sum(split.values()), "split": dict(split)})
        t += size
    totals: Counter[str] = Counter()
    for split in points.values():
        totals.update(split)
    return {
        "bucket_s": size,
        "start": start,
        "end": now,
        "series": sorted(totals),
        "points": out,
        "totals": dict(totals),
        "total": sum(totals.values()),
    }


def _timeseries(p: TimeSeries, c: BoardContext) -> dict[str, Any]:
    now = c.snapshot.taken_at or time.time()
    data = series(c.snapshot.events.get(p.topic, ()), p.split_by, p.span_s, now, p.time_field)
    return {"kind": "timeseries", "title": p.title, "topic": p.topic, "split_by": p.split_by, **data}


def _flow(p: FlowGraph, c: BoardContext) -> dict[str, Any]:
    declared = c.app.declared
    names = {b.name for b in declared.buckets} | {t.name for t in declared.topics}
    names |= {n.bucket for n in declared.notifications} | {n.topic for n in declared.notifications}
    names |= set(c.spec.dead_letter_topics)
    return {"kind": "flow", "title": p.title, **graph(c.portal, names)}


def _dead_letters(c: BoardContext) -> dict[str, Any]:
    items = list(c.snapshot.dead_letters)
    return {DEAD_LETTERS: {"kind": "dead_letters", "title": "Last dead letters", "items": items}}


_BUILDERS: dict[type, Callable[[Any, BoardContext], dict[str, Any]]] = {
    Counters: _counters,
    ImageStrip: _images,
    Table: _table,
    TimeSeries: _timeseries,
    FlowGraph: _flow,
}
