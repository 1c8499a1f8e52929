"""The composition root: one configured platform, its backends and its running services.

``kawa up`` builds a :class:`Platform` and starts every service that a capability contributes. A
capability registers a service factory (an import string naming ``factory(platform) -> Service | None``)
in :data:`service_factories`; the factory returns None when it has nothing to run under this config.
Backends are opened lazily and shared: :attr:`Platform.backends` is the one
:class:`~kawa.backends.Backends` every service is built on.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from kawa.backends import Backends, open_backends
from kawa.config import KawaConfig

if TYPE_CHECKING:
    from kawa.apps.runtime import RunningApp
    from kawa.functions.host import FunctionHost
    from kawa.log.base import EventLog
    from kawa.portal.server import PortalServer
    from kawa.routes.runner import RouteRunner
    from kawa.store.base import ObjectStore

log = logging.getLogger("kawa.platform")


class Service(Protocol):
    """Something ``kawa up`` runs: started once, stopped once (draining its work)."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


service_factories: list[str] = [
    "kawa.log.service:build_service",
    "kawa.ml.jobs:scheduler_service",
    "kawa.store.service:build_service",
    "kawa.routes.service:build_service",
    "kawa.functions.service:factory",
    "kawa.apps.runtime:build_service",
    "kawa.retrain.service:build_service",
    "kawa.portal.server:build_service",  # last: it shows what the others run
]
"""Import strings of ``factory(platform) -> Service | None``, in start order."""


def register_service(factory: str) -> None:
    if factory not in service_factories:
        service_factories.append(factory)


class Platform:
    """The configured backends plus the services and apps running on them.

    What runs is typed state other services read (the portal shows it):

    - ``apps``: the apps started here (:func:`kawa.apps.runtime.start_app`), by name;
    - ``app_refs``: ``kawa up --app`` references (``module:app`` function apps or ``module:plugin`` apps);
    - ``functions_host``: the host of the function apps ``kawa up`` runs (``--app``, ``functions.apps``);
    - ``route_runner``: the runner of the registered routes (``kawa routes apply``);
    - ``portal_server``: the portal this process serves.
    """

    def __init__(self, config: KawaConfig | None = None, *, backends: Backends | None = None) -> None:
        self.backends: Backends = backends or open_backends(config)
        self.config = self.backends.config
        self.services: list[Service] = []
        self.apps: dict[str, RunningApp] = {}
        self.app_refs: list[str] = []
        self.functions_host: FunctionHost | None = None
        self.route_runner: RouteRunner | None = None
        self.portal_server: PortalServer | None = None

    def function_hosts(self) -> list[FunctionHost]:
        """Every function host of this process: ``kawa up``'s, then each app's."""
        hosts = [self.functions_host] if self.functions_host is not None else []
        return hosts + [a.functions for a in self.apps.values() if a.functions is not None]

    def route_runners(self) -> list[RouteRunner]:
        """Every route runner of this process: the registered routes', then each app's."""
        runners = [self.route_runner] if self.route_runner is not None else []
        return runners + [a.routes for a in self.apps.values() if a.routes is not None]

    @property
    def log(self) -> EventLog:
        return self.backends.log

    @property
    def store(self) -> ObjectStore:
        return self.backends.store

    def start(self, extra: list[Callable[[Platform], Service | None]] | None = None) -> None:
        """Build and start every registered service (and ``extra`` ones); stop the started on failure."""
        factories: list[Callable[[Platform], Service | None]] = []
        for target in service_factories:
            module_name, _, attr = target.partition(":")
            factories.append(getattr(importlib.import_module(module_name), attr))
        factories.extend(extra or [])
        try:
            for factory in factories:
                service = factory(self)
                if service is None:
                    continue
                service.start()
                self.services.append(service)
                log.info("started %s", service.name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop services in reverse start order, then the apps still running, then close the backends."""
        while self.services:
            service = self.services.pop()
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
        for name in reversed(list(self.apps)):
            running = self.apps.pop(name)
            try:
                running.stop()
            except Exception:
                log.exception("stopping app %s failed", name)
        self.backends.close()
