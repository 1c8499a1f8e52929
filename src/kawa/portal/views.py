"""The live views' data, built from the sampler's latest state for one principal (PHI removed unless the
role may read it). The JSON API and the server-sent event streams return exactly these dicts."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from kawa.errors import KawaError
from kawa.portal.boards import Board, Panel
from kawa.portal.permissions import Action
from kawa.portal.sources.results import ResultsTail, percentile
from kawa.portal.sources.xray import BoardState

if TYPE_CHECKING:
    from kawa.apps.xray.settings import XraySettings
    from kawa.portal.auth import Principal
    from kawa.portal.runtime import Portal

TIMELINE_SPAN_S = 600.0
TIMELINE_BUCKETS_S = (2.0, 5.0, 10.0, 20.0, 30.0)  # the smallest giving at most ~40 bars is used
RISK_FUNCTION = "risk-assessment"


def thumb_url(bucket: str, key: str, size: int = 160) -> str:
    return f"/api/thumbnails/{quote(bucket)}/{quote(key)}?size={size}"


@dataclass(frozen=True)
class XrayContext:
    """What the X-ray board's panels read, taken once per build: one board state (one snapshot)."""

    portal: Portal
    settings: XraySettings
    state: BoardState
    tail: ResultsTail | None
    phi: bool  # the principal may read PHI


def _counts(c: XrayContext) -> dict[str, Any]:
    return {"counts": {k: c.state.counts.get(k, 0) for k in COUNTED}}


def _newest(c: XrayContext) -> dict[str, Any]:
    newest: dict[str, list[dict[str, Any]]] = {}
    phi_free = c.portal.store.phi.phi_free
    for panel, bucket in _buckets(c.settings).items():
        items = c.state.newest.get(panel, [])
        visible = c.phi or phi_free(bucket)
        newest[panel] = [dict(item, thumbnail=thumb_url(bucket, item["key"])) for item in items] if visible else []
    return {"newest": newest, "phi_hidden": not c.phi and not phi_free(c.settings.incoming_bucket)}


def _results(c: XrayContext) -> dict[str, Any]:
    rows = c.tail.rows(10) if c.tail is not None else []
    return {"results": [r.to_dict() | {"object": r.object if c.phi else None} for r in rows]}


def _trends(c: XrayContext) -> dict[str, Any]:
    tail = c.tail
    timeline = tail.timeline(_bucket_for(tail), TIMELINE_SPAN_S) if tail is not None else []
    counts = tail.counts() if tail is not None else {"label": Counter(), "version": Counter()}
    recent = [r for r in (tail.all_rows() if tail is not None else []) if r.time >= time.time() - 60]
    e2e = [r.e2e_ms for r in recent if r.e2e_ms is not None]
    latencies = e2e or [r.latency_ms for r in recent if r.latency_ms is not None]
    return {
        "timeline": timeline,
        "by_version": dict(counts["version"]),
        "by_label": dict(counts["label"]),
        "latency": {
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "window_s": 60,
            "kind": "end-to-end" if e2e else "in-function",
        },
    }


def _function(c: XrayContext) -> dict[str, Any]:
    replicas, function = _risk_function(c.portal, c.settings.images_topic)
    return {"replicas": replicas, "function": function}


def _dead_letters(c: XrayContext) -> dict[str, Any]:
    return {"dead_letters": c.state.dead_letters}


COUNTED = ("uploaded", "processed", "anonymized", "dead_lettered")

XRAY_BOARD: Board[XrayContext] = Board(
    "xray",
    (
        # Bucket sizes and topic sizes are listed to every role (GET /api/buckets/…/objects, /api/topics).
        Panel("counts", ("counts",), Action.VIEW, ("GET", "/api/topics"), _counts),
        # Per bucket, the same PHI gate as the object listing (phi.read unless the bucket is PHI-free).
        Panel("newest", ("newest", "phi_hidden"), Action.VIEW, ("GET", "/api/buckets/{bucket}/objects"), _newest),
        Panel("results", ("results",), Action.VIEW, ("GET", "/api/results"), _results),
        Panel(
            "trends",
            ("timeline", "by_version", "by_label", "latency"),
            Action.VIEW,
            ("GET", "/api/results/summary"),
            _trends,
        ),
        Panel("function", ("replicas", "function"), Action.VIEW, ("GET", "/api/functions"), _function),
        Panel(
            "dead_letters",
            ("dead_letters",),
            Action.DEADLETTERS_READ,
            ("GET", "/api/deadletters/{topic}/records"),
            _dead_letters,
        ),
    ),
)
"""The X-ray board's panels: each shown only to roles with the action of the endpoint that owns its data."""


def board(portal: Portal, principal: Principal) -> dict[str, Any]:
    """The X-ray board for ``principal``: counts, newest objects with thumbnails, results over time, the
    risk function and — for roles that may read them — dead letters.

    Built once per sample and role, however many browsers watch."""
    key = (portal.sampler.version, principal.user.role.value)
    cache = portal.board_cache
    with portal.board_lock:
        cached = cache.get(key)
    if cached is not None:
        return cached
    built = _board(portal, principal)
    with portal.board_lock:
        for stale in [k for k in cache if k[0] < key[0]]:
            del cache[stale]
        cache[key] = built
    return built


def _buckets(settings: XraySettings) -> dict[str, str]:
    return {
        "uploaded": settings.incoming_bucket,
        "processed": settings.processed_bucket,
        "anonymized": settings.anonymized_bucket,
    }


def _board(portal: Portal, principal: Principal) -> dict[str, Any]:
    settings = portal.xray.settings()
    if settings is None:
        _ok, reason = portal.xray.available()
        return {"configured": False, "reason": reason, "panels": []}
    state = portal.xray.state()
    context = XrayContext(portal, settings, state, portal.xray.tail(), principal.can(Action.PHI_READ))
    return XRAY_BOARD.build(
        principal.user.role,
        context,
        configured=True,
        reason=None,
        buckets=_buckets(settings),
        model=settings.model_ref,
        refreshed_at=state.refreshed_at,
    )


def _bucket_for(tail: Any) -> float:
    now = time.time()
    first = tail.first_time(now - TIMELINE_SPAN_S)
    span = now - first if first is not None else 0.0
    return next((b for b in TIMELINE_BUCKETS_S if span / b <= 40), TIMELINE_BUCKETS_S[-1])


def _risk_function(portal: Portal, images_topic: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    try:
        views = portal.functions.functions()
    except KawaError:
        return [], None
    chosen = next((v for v in views if v.spec.name == RISK_FUNCTION), None)
    chosen = chosen or next((v for v in views if v.spec.topic == images_topic), None)
    if chosen is None:
        return [], None
    history = [
        {
            "t": p["t"],
            "replicas": p["replicas"],
            "in_flight": p["in_flight"],
            "end_to_end_p99_ms": p["end_to_end_p99_ms"],
        }
        for p in portal.sampler.history(chosen.name, time.time() - TIMELINE_SPAN_S)
    ]
    s = chosen.stats
    return history, {
        "name": chosen.name,
        "replicas": s.replicas,
        "in_flight": s.in_flight,
        "rate_per_s": s.rate_per_s,
        "latency_p99_ms": s.latency_p99_ms,
        "end_to_end_p99_ms": s.end_to_end_p99_ms,
    }


OVERVIEW_BOARD: Board[Portal] = Board(
    "overview",
    (Panel("graph", ("nodes", "edges"), Action.VIEW, ("GET", "/api/topics"), lambda portal: _graph(portal)),),
)
"""The overview: one graph of what GET /api/topics, /api/buckets, /api/functions and /api/routes list."""


def overview(portal: Portal, principal: Principal) -> dict[str, Any]:
    """The platform as a graph for ``principal`` (see :data:`OVERVIEW_BOARD`)."""
    return OVERVIEW_BOARD.build(principal.user.role, portal)


def _graph(portal: Portal) -> dict[str, Any]:
    """The platform as a graph: buckets → topics → functions/routes → buckets/topics, with live rates."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    rate = portal.log.rates.rate

    def node(kind: str, name: str, **extra: Any) -> str:
        node_id = f"{kind}:{name}"
        nodes.setdefault(node_id, {"id": node_id, "kind": kind, "label": name, "rate": None, **extra})
        return node_id

    def edge(src: str, dst: str, value: float | None) -> None:
        edges.append({"from": src, "to": dst, "rate": None if value is None else round(value, 2)})

    for info in portal.sampler.topics:
        node("topic", info.name, rate=round(rate(info.name), 2))
    ok, _ = portal.store.available()
    if ok:
        try:
            for bucket in portal.store.buckets():
                b = node("bucket", bucket.name, phi_free=portal.store.phi.phi_free(bucket.name))
                for rule in portal.store.notifications(bucket.name):
                    edge(b, node("topic", rule.topic), rate(rule.topic))
        except KawaError:
            pass
    try:
        functions = portal.functions.functions()
    except KawaError:
        functions = []
    for view in functions:
        f = node("function", view.name, rate=view.stats.rate_per_s, replicas=view.stats.replicas)
        edge(node("topic", view.spec.topic), f, view.stats.rate_per_s)
        if view.spec.reply_topic:
            edge(f, node("topic", view.spec.reply_topic), rate(view.spec.reply_topic))
        if view.spec.dead_letter_topic:
            edge(f, node("topic", view.spec.dead_letter_topic), rate(view.spec.dead_letter_topic))
    settings = portal.xray.settings()
    if settings is not None:
        for view in functions:
            if view.spec.name == RISK_FUNCTION:
                edge(f"function:{view.name}", node("bucket", settings.processed_bucket), view.stats.rate_per_s)
    try:
        routes = portal.routes.routes()
    except KawaError:
        routes = []
    for route in routes:
        r = node("route", route.id)
        src = _endpoint_node(route.source, node)
        if src:
            edge(src, r, rate(src.split(":", 1)[1]) if src.startswith("topic:") else None)
        for target in (route.target or "").split(", "):
            dst = _endpoint_node(target, node)
            if dst:
                edge(r, dst, None)
        dead = _endpoint_node(route.dead_letter or "", node)
        if dead:
            edge(r, dead, rate(dead.split(":", 1)[1]))
    _layout(nodes, edges)
    return {"nodes": sorted(nodes.values(), key=lambda n: (n["x"], n["y"])), "edges": edges}


def _endpoint_node(uri: str, node: Any) -> str | None:
    scheme, _, rest = uri.partition(":")
    name = rest.split("?")[0].lstrip("/")
    if scheme in ("topic", "bucket") and name:
        return str(node(scheme, name))
    return None


def _layout(nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]]) -> None:
    """Columns by longest path from the sources (cycles cut), rows in name order; 200 x 64 px cells."""
    incoming: dict[str, set[str]] = {n: set() for n in nodes}
    for e in edges:
        if e["from"] != e["to"]:
            incoming.setdefault(e["to"], set()).add(e["from"])
    layer: dict[str, int] = {}

    def depth(n: str, path: frozenset[str]) -> int:
        if n in layer:
            return layer[n]
        parents = [p for p in incoming.get(n, ()) if p not in path]
        value = 0 if not parents else 1 + max(depth(p, path | {n}) for p in parents)
        layer[n] = value
        return value

    for n in sorted(nodes):
        depth(n, frozenset())
    rows: dict[int, int] = {}
    for n in sorted(nodes, key=lambda n: (layer[n], nodes[n]["kind"], n)):
        column = layer[n]
        nodes[n]["x"], nodes[n]["y"] = 20 + column * 230, 20 + rows.get(column, 0) * 64
        rows[column] = rows.get(column, 0) + 1
