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
}

if TYPE_CHECKING:
    from kawa.config import KawaConfig, load_config
    from kawa.errors import KawaError
    from kawa.events import CloudEvent, new_event
    from kawa.log import TopicSpec, open_log
    from kawa.platform import Platform

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
