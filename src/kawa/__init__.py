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
}

if TYPE_CHECKING:
    from kawa.config import KawaConfig, load_config  # noqa: F401
    from kawa.errors import KawaError  # noqa: F401
    from kawa.events import CloudEvent, new_event  # noqa: F401
    from kawa.functions.app import App  # noqa: F401
    from kawa.functions.context import Context  # noqa: F401
    from kawa.log import TopicSpec, open_log  # noqa: F401
    from kawa.platform import Platform  # noqa: F401

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kawa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
