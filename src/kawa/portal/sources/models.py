"""Registered models as the portal sees them, through :class:`kawa.ml.registry.Registry` (MLflow underneath,
imported on first use)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kawa.errors import NotConfigured

if TYPE_CHECKING:
    from kawa.ml.registry import AliasMove, Lineage, ModelVersionInfo, RegisteredModelInfo, Registry
    from kawa.platform import Platform


class ModelsSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._registry: Registry | None = None
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str | None]:
        if not self.platform.config.ml.tracking:
            return False, "the model registry is switched off (ml.tracking: false in kawa.yaml)"
        try:
            import kawa.ml.registry  # noqa: F401
        except ImportError:
            return False, "the model registry is not available: install the ml extra (`pip install 'kawa[ml]'`)"
        return True, None

    @property
    def registry(self) -> Registry:
        ok, reason = self.available()
        if not ok:
            raise NotConfigured(reason or "the model registry is not available")
        with self._lock:
            if self._registry is None:
                from kawa.ml.registry import Registry

                # Alias moves are published on the platform's log (opened by its backends on the first move).
                self._registry = Registry(self.platform.backends)
            return self._registry

    def models(self) -> list[RegisteredModelInfo]:
        return self.registry.list_models()

    def versions(self, name: str) -> list[ModelVersionInfo]:
        return self.registry.versions(name)

    def lineage(self, name: str, version: int) -> Lineage:
        return self.registry.lineage(name, version)

    def promote(self, name: str, version: int, alias: str) -> AliasMove:
        return self.registry.promote(name, version, alias)

    def rollback(self, name: str, alias: str) -> AliasMove:
        return self.registry.rollback(name, alias)

    def close(self) -> None:
        with self._lock:
            if self._registry is not None:
                self._registry.close()
            self._registry = None
