"""Event-driven serverless functions: the API, the embedded host, and the distributed shapes.

``App``/``Context`` are the user API (``kawa.App``, ``kawa.Context``); :class:`FunctionHost` runs functions
on an event log (``kawa up``, ``kawa worker``); :mod:`kawa.functions.http` serves one function as a
CloudEvents HTTP endpoint (``kawa serve-function``, Knative); :mod:`kawa.functions.knative` renders Knative
manifests (``kawa deploy knative``). Heavy pieces are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "App": "kawa.functions.app",
    "FunctionSpec": "kawa.functions.app",
    "load_app": "kawa.functions.app",
    "Context": "kawa.functions.context",
    "BatchContext": "kawa.functions.batch",
    "PermanentError": "kawa.functions.invoke",
    "ObjectEvent": "kawa.functions.types",
    "Predictor": "kawa.functions.types",
    "FunctionHost": "kawa.functions.host",
    "HostOptions": "kawa.functions.options",
    "EventFilter": "kawa.functions.filters",
    "ScalingPolicy": "kawa.functions.autoscaler",
    "KPA": "kawa.functions.autoscaler",
    "FunctionStats": "kawa.functions.metrics",
}

if TYPE_CHECKING:
    from kawa.functions.app import App, FunctionSpec, load_app
    from kawa.functions.autoscaler import KPA, ScalingPolicy
    from kawa.functions.batch import BatchContext
    from kawa.functions.context import Context
    from kawa.functions.filters import EventFilter
    from kawa.functions.host import FunctionHost
    from kawa.functions.invoke import PermanentError
    from kawa.functions.metrics import FunctionStats
    from kawa.functions.options import HostOptions
    from kawa.functions.types import ObjectEvent, Predictor

__all__ = [
    "KPA",
    "App",
    "BatchContext",
    "Context",
    "EventFilter",
    "FunctionHost",
    "FunctionSpec",
    "FunctionStats",
    "HostOptions",
    "ObjectEvent",
    "PermanentError",
    "Predictor",
    "ScalingPolicy",
    "load_app",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa.functions' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
