"""Data routes: Camel-style integration in Python.

A route reads messages *from* an endpoint (``topic:``, ``bucket:``, ``file:``, ``http:``, ``sql:``,
``replay:``, ``timer:``), runs them through *steps* (map, filter, choice, split, aggregate, enrich, validate,
convert, fetch, dicom-deidentify, pixel-redact, pii-mask, or your own) and writes them *to* endpoints, with a
dead-letter channel, redeliveries and durable progress. Declare routes in YAML (``kawa routes apply``) or in
Python::

    from kawa.routes import route, RouteRunner
    spec = route("orders", "topic:orders", [{"filter": "amount > 100"}, {"pii-mask": {"fields": {"email": "hmac"}}}],
                 "sql:sqlite:///orders.db?table=big_orders")
    RouteRunner.local().add(spec)

The three steps of a route's life are public functions: :func:`parse` (a mapping → a validated
:class:`RouteSpec`), :func:`apply` (store routes in the registry ``kawa up`` follows) and :func:`run` (run
routes in this process on the backends you hold).

The de-identification functions work on their own too: :func:`kawa.routes.deid.deidentify_dataset`,
:func:`kawa.routes.redact.redact_pixels`, :func:`kawa.routes.pii.mask_record`. See docs/routes.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Message": "kawa.routes.message",
    "RouteSpec": "kawa.routes.spec",
    "EndpointSpec": "kawa.routes.spec",
    "route": "kawa.routes.spec",
    "load_routes": "kawa.routes.spec",
    "RouteContext": "kawa.routes.components.base",
    "register_component": "kawa.routes.components.base",
    "Processor": "kawa.routes.processors",
    "register_processor": "kawa.routes.processors",
    "known_processors": "kawa.routes.processors",
    "RouteWorker": "kawa.routes.worker",
    "RouteRunner": "kawa.routes.runner",
    "RouteRegistry": "kawa.routes.registry",
}

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.routes.components.base import RouteContext, register_component
    from kawa.routes.message import Message
    from kawa.routes.processors import Processor, known_processors, register_processor
    from kawa.routes.registry import RouteRegistry
    from kawa.routes.runner import RouteRunner
    from kawa.routes.spec import EndpointSpec, RouteSpec, load_routes, route
    from kawa.routes.worker import RouteWorker

__all__ = [
    "EndpointSpec",
    "Message",
    "Processor",
    "RouteContext",
    "RouteRegistry",
    "RouteRunner",
    "RouteSpec",
    "RouteWorker",
    "apply",
    "known_processors",
    "load_routes",
    "parse",
    "register_component",
    "register_processor",
    "route",
    "run",
]


def parse(data: Mapping[str, Any], origin: str = "<python>") -> RouteSpec:
    """The route ``data`` describes (what one entry of a routes YAML file holds), validated: unknown
    endpoint schemes and processors raise :class:`~kawa.errors.InvalidRoute` naming them."""
    from kawa.routes.runner import validate_route
    from kawa.routes.spec import parse_route

    spec = parse_route(data, origin=origin)
    validate_route(spec, origin)
    return spec


def apply(specs: Iterable[RouteSpec], config: KawaConfig) -> list[tuple[str, str]]:
    """Store ``specs`` in the route registry of ``config``'s home (``kawa up`` starts, restarts or keeps each
    one); ``(route id, outcome)`` for each, as ``kawa routes apply`` prints them."""
    from kawa.routes.registry import RouteRegistry
    from kawa.routes.runner import validate_route

    specs = list(specs)
    for spec in specs:
        validate_route(spec)
    return list(RouteRegistry.for_home(config.home).apply(specs))


def run(specs: Iterable[RouteSpec], backends: Backends) -> RouteRunner:
    """Run ``specs`` as threads of this process on ``backends``; stop them with the runner's ``stop()``."""
    from kawa.routes.runner import RouteRunner

    runner = RouteRunner(backends)
    try:
        for spec in specs:
            runner.add(spec)
    except BaseException:
        runner.stop()
        raise
    return runner


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa.routes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
