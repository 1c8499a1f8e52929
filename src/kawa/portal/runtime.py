"""The portal's runtime state: the platform it shows, its users, the capability sources and the sampler.

One :class:`Portal` per served application; routers reach it as ``request.app.state.portal``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kawa.audit.trail import AuditTrail
from kawa.errors import KawaError
from kawa.portal.apps import NO_APPS, installed_apps, phi_free_buckets
from kawa.portal.oidc import SingleSignOn
from kawa.portal.security import load_secret, users_db_path
from kawa.portal.sources.appboard import AppBoards
from kawa.portal.sources.experiments import ExperimentsSource
from kawa.portal.sources.functions import FunctionsSource
from kawa.portal.sources.jobs import JobsSource
from kawa.portal.sources.log import LogSource
from kawa.portal.sources.loop import LoopSource
from kawa.portal.sources.models import ModelsSource
from kawa.portal.sources.monitoring import MonitoringSource
from kawa.portal.sources.projects import ProjectsSource
from kawa.portal.sources.routes import RoutesSource
from kawa.portal.sources.store import PhiPolicy, StoreSource
from kawa.portal.throttle import LoginThrottle
from kawa.portal.users import UserStore
from kawa.projects.registry import ProjectRegistry

if TYPE_CHECKING:
    from kawa.platform import Platform
    from kawa.portal.live import Sampler

log = logging.getLogger("kawa.portal")

CAPABILITIES = ("log", "store", "functions", "routes", "jobs", "models", "apps")


@dataclass(frozen=True)
class CapabilityStatus:
    name: str
    configured: bool
    reason: str | None = None


class Portal:
    """Everything the portal's routes read. ``start``/``stop`` run the live sampler."""

    def __init__(self, platform: Platform) -> None:
        from kawa.portal.live import Sampler

        self.platform = platform
        self.config = platform.config
        self.users = UserStore(users_db_path(self.config))
        self.secret = load_secret(self.config)
        self.logins = LoginThrottle()
        self.sso = SingleSignOn(self.config.portal.oidc) if self.config.portal.oidc is not None else None
        self.log = LogSource(platform.log)
        self.store = StoreSource(
            lambda: platform.store, PhiPolicy(self.config.portal.phi_free_buckets, self._app_phi_free)
        )
        self.functions = FunctionsSource(platform)
        self.routes = RoutesSource(platform)
        self.jobs = JobsSource(platform)
        self.projects = ProjectsSource(
            ProjectRegistry.in_home(self.config.home), self.jobs, self.store.project_bytes, self.functions
        )
        self.models = ModelsSource(platform)
        self.experiments = ExperimentsSource(platform)
        self.loop = LoopSource(platform)
        self.monitoring = MonitoringSource(platform)
        self.boards = AppBoards(self)
        self.audit = AuditTrail(platform.log)
        self.sampler: Sampler = Sampler(self, self.config.portal.sample_interval_s)
        self.board_cache: dict[tuple[int, str, str], dict[str, Any]] = {}  # (sample, role, app) -> board
        self.board_lock = threading.Lock()

    def _app_phi_free(self) -> Iterable[str]:
        """PHI-free buckets declared by the apps running here (``platform.apps``)."""
        return phi_free_buckets(self.platform)

    def capabilities(self) -> list[CapabilityStatus]:
        out = [CapabilityStatus("log", True)]
        for name, check in (
            ("store", self.store.available),
            ("functions", self.functions.available),
            ("routes", self.routes.available),
            ("jobs", self.jobs.available),
            ("models", self.models.available),
            ("apps", self.apps_available),
        ):
            try:
                ok, reason = check()
            except KawaError as exc:
                ok, reason = False, str(exc)
            out.append(CapabilityStatus(name, ok, reason))
        return out

    def apps_available(self) -> tuple[bool, str | None]:
        return (True, None) if installed_apps(self.platform) else (False, NO_APPS)

    def start(self) -> None:
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()
        for source in (self.jobs, self.models, self.boards, self.audit):
            try:
                source.close()
            except Exception:
                log.warning("closing %s failed", type(source).__name__, exc_info=True)
        self.users.close()
