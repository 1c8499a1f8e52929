"""Installed apps: found through the ``kawa.apps`` entry-point group, loaded only when used.

An app package declares, in its ``pyproject.toml``::

    [project.entry-points."kawa.apps"]
    echo = "echo_app:plugin"

The registry keeps each entry point's ``module:attr`` string; :func:`app_names` lists names without
importing any app, and :func:`get_app` imports one app on first use. Apps can also be registered from code
(:func:`register_app`, for tests and embedders) or named in ``kawa.yaml`` (``apps.<name>.plugin``) and by
``kawa up --app pkg.module:plugin``. Kawa's own reference apps are registered by their import strings too,
so a source checkout whose installed metadata predates them still finds them.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path
from typing import Any

from kawa.apps.plugin import ENTRY_POINT_GROUP, AppPlugin
from kawa.errors import AppLoadError, AppNotFound

__all__ = ["app_names", "get_app", "is_plugin_ref", "load_plugin", "register_app", "unregister_app"]

BUILTIN_APPS: dict[str, str] = {
    "xray": "kawa.apps.xray.plugin:plugin",
    "fraud": "kawa.apps.fraud.plugin:plugin",
    "sepsis": "kawa.apps.sepsis.plugin:plugin",
}
"""Kawa's reference apps (also entry points of the ``kawa`` distribution)."""

_registered: dict[str, AppPlugin | str] = {}
_loaded: dict[str, AppPlugin] = {}
_lock = threading.Lock()


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _known() -> dict[str, AppPlugin | str]:
    """name → plugin or import string: built-ins, then entry points, then registrations (later wins)."""
    return {**BUILTIN_APPS, **_entry_points(), **_registered}


def app_names() -> list[str]:
    """The names of the installed apps, sorted; imports no app code."""
    return sorted(_known())


def load_plugin(ref: str) -> AppPlugin:
    """Import ``"pkg.module:attr"``: an :class:`AppPlugin`, or a zero-argument callable returning one."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise AppLoadError(f"app plugin reference {ref!r} must look like pkg.module:plugin")
    cwd = str(Path.cwd())  # as `kawa worker --app` does: a module next to where it runs is found
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise AppLoadError(f"cannot import {module_name!r} for app plugin {ref!r}: {exc}") from exc
    except AttributeError:
        raise AppLoadError(
            f"{module_name!r} has no {attr!r}; name the AppPlugin object as {module_name}:NAME"
        ) from None
    if not isinstance(target, AppPlugin) and callable(target):
        target = target()
    if not isinstance(target, AppPlugin):
        raise AppLoadError(f"{ref} is not a kawa.apps.plugin.AppPlugin (nor a callable returning one)")
    return target


def is_plugin_ref(ref: str) -> bool:
    """Whether ``ref`` (``pkg.module:attr``) names an :class:`AppPlugin` (imports it to find out)."""
    try:
        load_plugin(ref)
    except AppLoadError:
        return False
    return True


def register_app(plugin: AppPlugin | str, name: str | None = None) -> str:
    """Register an app from code: an :class:`AppPlugin`, or its import string (loaded now unless ``name`` is
    given, then on first use). Returns the app's name; a registration replaces an installed app of that name."""
    if isinstance(plugin, str) and name is None:
        plugin = load_plugin(plugin)
    key = name or plugin.name  # type: ignore[union-attr]
    with _lock:
        _registered[key] = plugin
        _loaded.pop(key, None)
    return key


def unregister_app(name: str) -> None:
    with _lock:
        _registered.pop(name, None)
        _loaded.pop(name, None)


def get_app(name: str) -> AppPlugin:
    """The app called ``name``, imported on first use; :class:`~kawa.errors.AppNotFound` lists the installed."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
    known = _known()
    found = known.get(name)
    if found is None:
        installed = ", ".join(sorted(known)) or "none"
        raise AppNotFound(
            f"no app called {name!r} is installed (installed: {installed}); install its package, which names "
            f"it in the {ENTRY_POINT_GROUP!r} entry-point group"
        )
    plugin = load_plugin(found) if isinstance(found, str) else found
    if plugin.name != name:
        raise AppLoadError(f"the app installed as {name!r} calls itself {plugin.name!r}; make the two names agree")
    with _lock:
        _loaded[name] = plugin
    return plugin
