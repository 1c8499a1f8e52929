"""Model flavours, one module each, registered by name: ``flavors.get("onnx").load(path, conf)``.

A new flavour is one module with the :class:`~kawa.ml.flavors.base.FlavorModule` attributes and one
:func:`register` line (here, or in your own package)::

    from kawa.ml import flavors
    flavors.register("torch", "mypkg.kawa_torch")   # imported when first used

The registry keeps the module's dotted name and imports it on first use, so ``import kawa.ml`` stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import cast

from kawa.errors import ModelError
from kawa.ml.flavors.base import FlavorModule, LoadedModel, PredictFn, TensorSpec

_REGISTERED: dict[str, str | ModuleType] = {}

__all__ = [
    "FlavorModule",
    "LoadedModel",
    "PredictFn",
    "TensorSpec",
    "for_file",
    "for_mlmodel",
    "get",
    "names",
    "register",
]


def register(name: str, module: str | ModuleType) -> None:
    """Register flavour ``name`` implemented by ``module`` (a module or its dotted name, imported lazily).
    Registering a name again replaces it."""
    _REGISTERED[name] = module


def names() -> list[str]:
    return list(_REGISTERED)


def get(name: str) -> FlavorModule:
    """The flavour registered as ``name``."""
    module = _REGISTERED.get(name)
    if module is None:
        known = ", ".join(_REGISTERED)
        raise ModelError(
            f"unknown model flavor {name!r}: use one of {known}, or register yours with kawa.ml.flavors.register"
        )
    if isinstance(module, str):
        try:
            module = importlib.import_module(module)
        except ImportError as exc:
            raise ModelError(f"flavor {name!r} is registered as {module!r}, which cannot be imported: {exc}") from exc
        _REGISTERED[name] = module
    return cast(FlavorModule, module)


def for_mlmodel(keys: Iterable[str]) -> list[tuple[str, FlavorModule]]:
    """The registered flavours that load an ``MLmodel`` with these flavour keys: specific ones in registration
    order, then generic ones (pyfunc)."""
    wanted = set(keys)
    matches = [(n, get(n)) for n in list(_REGISTERED)]
    found = [(n, f) for n, f in matches if f.MLMODEL_KEY in wanted]
    return [m for m in found if not m[1].GENERIC] + [m for m in found if m[1].GENERIC]


def for_file(path: Path) -> tuple[str, FlavorModule] | None:
    """The flavour that loads the bare model file ``path`` (by its suffix), if any."""
    suffix = path.suffix.lower()
    for n in list(_REGISTERED):
        flavor = get(n)
        if suffix in flavor.SUFFIXES:
            return n, flavor
    return None


register("sklearn", "kawa.ml.flavors.sklearn")
register("onnx", "kawa.ml.flavors.onnx")
register("lightgbm", "kawa.ml.flavors.lightgbm")
register("pyfunc", "kawa.ml.flavors.pyfunc")
register("lleaves", "kawa.ml.flavors.lleaves_flavor")
