"""The overview: the platform as one graph (buckets → topics → functions/routes → buckets/topics) with
live rates, built for one principal. The JSON API and the server-sent event stream return exactly this.
App boards are built in :mod:`kawa.portal.board_view`."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from kawa.errors import KawaError
from kawa.portal.boards import Board, Panel
from kawa.portal.permissions import Action

if TYPE_CHECKING:
    from kawa.portal.auth import Principal
    from kawa.portal.runtime import Portal


OVERVIEW_BOARD: Board[Portal] = Board(
    "overview",
    (Panel("graph", ("nodes", "edges"), Action.VIEW, ("GET", "/api/topics"), lambda portal: _graph(portal)),),
)
"""The overview: one graph of what GET /api/topics, /api/buckets, /api/functions and /api/routes list."""


def overview(portal: Portal, principal: Principal) -> dict[str, Any]:
    """The platform as a graph for ``principal`` (see :data:`OVERVIEW_BOARD`): without the buckets and topics of
    projects they may not view, nor the functions and routes touching those (a route needs ``portal.view`` in
    every project it touches), laid out again so no gap shows where they were."""
    built = OVERVIEW_BOARD.build(principal.user.role, portal)
    if "nodes" in built:
        built["nodes"], built["edges"] = _visible(portal, principal, built["nodes"], built["edges"])
    return built


def _visible(
    portal: Portal, principal: Principal, nodes: list[dict[str, Any]], edges: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    seen: set[str] = set()
    for kind in ("bucket", "topic"):
        names = [n["label"] for n in nodes if n["kind"] == kind]
        seen.update(f"{kind}:{name}" for name in portal.projects.viewable(principal.user, kind, names))
    hidden = {n["id"] for n in nodes if n["kind"] in ("bucket", "topic") and n["id"] not in seen}
    if not hidden:
        return nodes, edges
    for e in edges:  # a function or route touching what is hidden is hidden with it
        for a, b in ((e["from"], e["to"]), (e["to"], e["from"])):
            if a in hidden and not b.startswith(("bucket:", "topic:")):
                hidden.add(b)
    kept = {n["id"]: dict(n) for n in nodes if n["id"] not in hidden}
    kept_edges = [e for e in edges if e["from"] in kept and e["to"] in kept]
    _layout(kept, kept_edges)
    return sorted(kept.values(), key=lambda n: (n["x"], n["y"])), kept_edges


def _graph(portal: Portal, keep: Collection[str] | None = None) -> dict[str, Any]:
    """The platform as a graph: buckets → topics → functions/routes → buckets/topics, with live rates.
    With ``keep`` (bucket and topic names), only those and the functions and routes touching them."""
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
    if keep is not None:
        nodes, edges = _only(nodes, edges, set(keep))
    _layout(nodes, edges)
    return {"nodes": sorted(nodes.values(), key=lambda n: (n["x"], n["y"])), "edges": edges}


def _only(
    nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]], keep: set[str]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    kept = {n for n, v in nodes.items() if v["kind"] in ("bucket", "topic") and v["label"] in keep}
    for e in edges:  # the functions and routes reading or writing what is kept
        for a, b in ((e["from"], e["to"]), (e["to"], e["from"])):
            if a in kept and nodes[b]["kind"] in ("function", "route"):
                kept.add(b)
    return {n: v for n, v in nodes.items() if n in kept}, [e for e in edges if e["from"] in kept and e["to"] in kept]


def graph(portal: Portal, keep: Collection[str]) -> dict[str, Any]:
    """The part of the platform graph around ``keep`` (an app's buckets and topics)."""
    return _graph(portal, keep)


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
