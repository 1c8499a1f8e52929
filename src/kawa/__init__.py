"""Kawa: an event-driven MLOps platform.

``import kawa`` is light: the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "KawaError": "kawa.errors",
    "KawaConfig": "kawa.config",
    "load_config": "kawa.config",
    "CloudEvent": "kawa.events",
    "new_event": "kawa.events",
    "open_log": "kawa.log",
    "TopicSpec": "kawa.log",
    "Platform": "kawa.platform",
    "App": "kawa.functions.app",
    "Context": "kawa.functions.context",
    "BatchContext": "kawa.functions.batch",
    "ObjectEvent": "kawa.functions.types",
    "Predictor": "kawa.functions.types",
    "PermanentError": "kawa.functions.invoke",
}
_SUBMODULES = {"testing": "kawa.testing"}

if TYPE_CHECKING:
    from kawa import testing as testing
    from kawa.config import KawaConfig as KawaConfig
    from kawa.config import load_config as load_config
    from kawa.errors import KawaError as KawaError
    from kawa.events import CloudEvent as CloudEvent
    from kawa.events import new_event as new_event
    from kawa.functions.app import App as App
    from kawa.functions.batch import BatchContext as BatchContext
    from kawa.functions.context import Context as Context
    from kawa.functions.invoke import PermanentError as PermanentError
    from kawa.functions.types import ObjectEvent as ObjectEvent
    from kawa.functions.types import Predictor as Predictor
    from kawa.log import TopicSpec as TopicSpec
    from kawa.log import open_log as open_log
    from kawa.platform import Platform as Platform

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value: Any = importlib.import_module(_SUBMODULES[name])
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
