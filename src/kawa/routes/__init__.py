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
    from kawa.routes.components.base import RouteContext, register_component  # noqa: F401
    from kawa.routes.message import Message  # noqa: F401
    from kawa.routes.processors import Processor, known_processors, register_processor  # noqa: F401
    from kawa.routes.registry import RouteRegistry  # noqa: F401
    from kawa.routes.runner import RouteRunner  # noqa: F401
    from kawa.routes.spec import EndpointSpec, RouteSpec, load_routes, route  # noqa: F401
    from kawa.routes.worker import RouteWorker  # noqa: F401

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa.routes' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
