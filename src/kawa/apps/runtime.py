"""Starting an app on a platform: what it declares is created, its functions and routes run.

:func:`start_app` creates the app's buckets, topics and bucket notifications (idempotently), hosts its
functions in a :class:`~kawa.functions.FunctionHost` and runs its routes in a
:class:`~kawa.routes.RouteRunner`, all on the platform's :class:`~kawa.backends.Backends`, and records
the :class:`RunningApp` in ``platform.apps`` — where the portal finds its board, its PHI-free buckets and
its live statistics. ``kawa up`` starts the apps ``kawa.yaml`` names (``apps:``) and those given with
``--app pkg.module:plugin`` through :func:`build_service`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.apps.plugin import AppPlugin, Declared, declared

if TYPE_CHECKING:
    from kawa.apps.board import BoardSpec
    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.functions import App, FunctionHost, HostOptions
    from kawa.platform import Platform
    from kawa.routes import RouteRunner, RouteSpec

__all__ = ["RunningApp", "app_functions", "app_routes", "build_service", "prepare_app", "section_of", "start_app"]

log = logging.getLogger("kawa.apps")

PLUGIN_KEY = "plugin"
"""The key of an app's ``kawa.yaml`` section that names its plugin (``pkg.module:plugin``), not a setting."""


@dataclass
class RunningApp:
    """An app started on a platform: its declarations and what runs for it in this process.

    ``functions`` is None when its functions run elsewhere (``kawa worker`` processes) or it has none;
    ``routes`` likewise."""

    declared: Declared
    functions: FunctionHost | None = None
    routes: RouteRunner | None = None
    _board: BoardSpec | None = field(default=None, repr=False)
    _board_built: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def settings(self) -> Any:
        return self.declared.settings

    @property
    def board(self) -> BoardSpec | None:
        """The app's board (built once from its settings; None when it declares none)."""
        if not self._board_built:
            self._board = self.declared.board()
            self._board_built = True
        return self._board

    def phi_free_buckets(self) -> tuple[str, ...]:
        return self.declared.phi_free_buckets()

    def stop(self) -> None:
        """Stop the routes, then drain and stop the functions."""
        routes, self.routes = self.routes, None
        if routes is not None:
            routes.stop()
        functions, self.functions = self.functions, None
        if functions is not None:
            functions.stop()


def section_of(config: KawaConfig, name: str) -> dict[str, Any]:
    """The app's settings from ``apps.<name>`` in ``kawa.yaml`` (without the ``plugin`` key)."""
    return {k: v for k, v in (config.apps.get(name) or {}).items() if k != PLUGIN_KEY}


def prepare_app(backends: Backends, app: Declared) -> None:
    """Create what ``app`` declares: buckets, topics (partitions, retention), bucket notifications."""
    from kawa.log import TopicSpec
    from kawa.store import NotificationRule

    for bucket in app.buckets:
        backends.store.create_bucket(bucket.name, exist_ok=True)
    for topic in app.topics:
        spec = (
            TopicSpec(topic.name, partitions=topic.partitions)
            if topic.retention_ms is None
            else TopicSpec(topic.name, partitions=topic.partitions, retention_ms=topic.retention_ms)
        )
        backends.log.create_topic(spec, exist_ok=True)
    for rule in app.notifications:
        backends.store.add_notification(
            NotificationRule(
                bucket=rule.bucket,
                topic=rule.topic,
                events=rule.events,
                prefix=rule.prefix or None,
                suffix=rule.suffix or None,
            )
        )


def _import(ref: str, what: str) -> Any:
    from kawa.errors import AppLoadError

    module_name, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AppLoadError(f"cannot load {what} {ref!r}: {exc}") from exc


def app_functions(app: Declared, config: KawaConfig) -> App | None:
    """The :class:`~kawa.functions.App` holding ``app``'s functions (None when it declares none)."""
    target = app.plugin.functions
    if target is None:
        return None
    if isinstance(target, str):
        from kawa.functions.app import load_app

        return load_app(target)
    built: App = target(app.settings, config)
    return built


def app_routes(app: Declared) -> list[RouteSpec]:
    """The routes ``app`` declares, parsed and validated."""
    from kawa.routes import RouteSpec, parse

    specs: list[RouteSpec] = []
    for ref in app.plugin.routes:
        made = _import(ref, f"the route of app {app.name!r}")(app.settings)
        items = made if isinstance(made, Sequence) and not isinstance(made, str | bytes) else [made]
        for item in items:
            specs.append(item if isinstance(item, RouteSpec) else parse(item, origin=ref))
    return specs


def start_app(
    platform: Platform,
    app: AppPlugin | Declared | str,
    section: Mapping[str, Any] | None = None,
    *,
    functions: bool = True,
    routes: bool = True,
    host_options: HostOptions | None = None,
) -> RunningApp:
    """Start ``app`` (a plugin, its declarations, or an installed app's name) on ``platform``: create what it
    declares, host its functions (unless ``functions=False``: ``kawa worker`` processes run them) and run
    its routes (unless ``routes=False``). ``section`` is its settings (default: ``apps.<name>`` of the
    platform's configuration). The running app is recorded in ``platform.apps``; stop it with
    :meth:`RunningApp.stop` (``platform.stop()`` stops the apps still running)."""
    from kawa.errors import ConfigError

    if isinstance(app, str):
        from kawa.apps.registry import get_app

        app = get_app(app)
    if isinstance(app, AppPlugin):
        app = declared(app, section if section is not None else section_of(platform.config, app.name))
    if app.name in platform.apps:
        raise ConfigError(f"app {app.name!r} already runs on this platform; stop it before starting it again")
    from kawa.events.schemas import register_schema

    for event_type, schema in app.plugin.events.items():  # every reader of these types reads the one shape
        register_schema(event_type, schema)
    backends = platform.backends
    prepare_app(backends, app)
    running = RunningApp(app)
    try:
        if functions:
            hosted = app_functions(app, platform.config)
            if hosted is not None:
                from kawa.functions import FunctionHost

                running.functions = FunctionHost(
                    hosted,
                    log=backends.log,
                    config=platform.config,
                    store_factory=lambda: backends.store,
                    options=host_options,
                )
                running.functions.start()
        if routes:
            specs = app_routes(app)
            if specs:
                from kawa.routes import RouteRunner

                running.routes = RouteRunner(backends)
                for spec in specs:
                    running.routes.add(spec)
    except BaseException:
        running.stop()
        raise
    platform.apps[app.name] = running
    log.info("app %s started", app.name)
    return running


def stop_app(platform: Platform, name: str) -> None:
    """Stop the app ``name`` running on ``platform`` (nothing when it does not run there)."""
    running = platform.apps.pop(name, None)
    if running is not None:
        running.stop()
        log.info("app %s stopped", name)


class AppsService:
    """``kawa up``'s apps: those ``kawa.yaml`` names under ``apps:`` and those ``--app`` names as plugins."""

    name = "apps"

    def __init__(self, platform: Platform, plugins: list[AppPlugin]) -> None:
        self.platform = platform
        self.plugins = plugins
        self.started: list[str] = []

    def start(self) -> None:
        for plugin in self.plugins:
            start_app(self.platform, plugin)
            self.started.append(plugin.name)

    def stop(self) -> None:
        while self.started:
            stop_app(self.platform, self.started.pop())


def configured_plugins(platform: Platform) -> list[AppPlugin]:
    """The apps ``kawa up`` starts: ``apps:`` of ``kawa.yaml`` (by name, or ``plugin:`` import string) and
    the ``--app`` references that name plugins (``platform.app_refs``), each once."""
    from kawa.apps.registry import get_app, is_plugin_ref, load_plugin

    plugins: dict[str, AppPlugin] = {}
    for name, section in platform.config.apps.items():
        ref = (section or {}).get(PLUGIN_KEY)
        plugin = load_plugin(str(ref)) if ref else get_app(name)
        plugins.setdefault(plugin.name, plugin)
    for ref in platform.app_refs:
        if is_plugin_ref(ref):
            plugin = load_plugin(ref)
            plugins.setdefault(plugin.name, plugin)
    return list(plugins.values())


def build_service(platform: Platform) -> AppsService | None:
    """The apps service of ``kawa up`` (None when no app is to be started)."""
    plugins = configured_plugins(platform)
    return AppsService(platform, plugins) if plugins else None
