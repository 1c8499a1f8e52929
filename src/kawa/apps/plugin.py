"""The one contract between an application and the platform: :class:`AppPlugin`.

An installed app registers an entry point in the ``kawa.apps`` group naming a zero-argument callable (or an
:class:`AppPlugin` object) that returns its plugin. ``kawa up``, ``kawa demo <app>`` and the portal find
apps there (loaded lazily, on first use) and never name an app in their code.

An app declares what it needs: its settings model (validated from ``apps.<name>`` in ``kawa.yaml``), its
buckets (with ``phi``), topics, bucket notifications, functions, routes, models with their trainers, the
schemas of the events it emits and its board (see :mod:`kawa.apps.board`). The platform creates what an
app declares when it starts the app.

This module is the contract only (frozen data, no I/O); :mod:`kawa.apps.registry` discovers plugins and
:mod:`kawa.apps.runtime` creates and runs what they declare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kawa.apps.board import BoardSpec
    from kawa.events.schemas import EventSchema

ENTRY_POINT_GROUP = "kawa.apps"


@dataclass(frozen=True)
class BucketDecl:
    """A bucket the app reads or writes. ``phi``: its objects may hold protected health information, so
    only roles with ``phi.read`` see them (names, thumbnails, contents) and nothing derived leaves it."""

    name: str
    phi: bool = False
    description: str = ""


@dataclass(frozen=True)
class TopicDecl:
    """A topic of the app: ``schema`` (a pydantic model) types the data of the events on it, ``event_type``
    is their CloudEvents ``type``; ``retention_ms`` None keeps the log's default."""

    name: str
    partitions: int = 1
    retention_ms: int | None = None
    event_type: str | None = None
    schema: type[BaseModel] | None = None
    description: str = ""


@dataclass(frozen=True)
class NotificationDecl:
    """Object notifications of ``bucket`` published to ``topic`` (S3 event names, key prefix/suffix)."""

    bucket: str
    topic: str
    events: tuple[str, ...] = ("s3:ObjectCreated:*",)
    prefix: str = ""
    suffix: str = ""


@dataclass(frozen=True)
class ModelDecl:
    """A registered model the app serves, with the import string of its trainer
    (``"pkg.module:train"``, called as ``train(settings, backends, progress)`` inside a job)."""

    name: str
    trainer: str | None = None
    alias: str = "champion"
    description: str = ""


@dataclass(frozen=True)
class AppPlugin:
    """What an application declares. Everything but ``name`` is optional.

    - ``settings``: the pydantic model of the app's section of ``kawa.yaml`` (``apps.<name>``);
    - ``functions``: import string of the :class:`kawa.App` holding the app's functions
      (``"pkg.module:app"``), or a callable ``(settings, config) -> kawa.App`` (``config``: the platform's
      :class:`~kawa.config.KawaConfig`, for paths under its home);
    - ``routes``: import strings of callables ``(settings) -> route`` where a route is a
      :class:`~kawa.routes.RouteSpec`, a mapping (what a routes YAML file holds) or a sequence of them;
    - ``board``: ``(settings) -> BoardSpec``, the panels the portal shows for this app;
    - ``demo``: import string of ``demo(platform, declared, options) -> int`` run by ``kawa demo <name>``
      (``platform``: a :class:`~kawa.platform.Platform` on the configured backends, no service started;
      ``declared``: this app's :class:`Declared`; ``options``: :class:`DemoOptions`). The demo starts the
      app with :func:`kawa.apps.runtime.start_app` when it is ready to; ``kawa demo`` stops the platform.

    Declarations that depend on settings (bucket names come from settings) are callables of the validated
    settings; :func:`declared` evaluates them once.
    """

    name: str
    title: str = ""
    description: str = ""
    settings: type[BaseModel] | None = None
    buckets: Callable[[Any], tuple[BucketDecl, ...]] | None = None
    topics: Callable[[Any], tuple[TopicDecl, ...]] | None = None
    notifications: Callable[[Any], tuple[NotificationDecl, ...]] | None = None
    functions: str | Callable[[Any, Any], Any] | None = None
    routes: tuple[str, ...] = ()
    models: Callable[[Any], tuple[ModelDecl, ...]] | None = None
    events: Mapping[str, type[EventSchema]] = field(default_factory=dict)
    """CloudEvents ``type`` → the pydantic schema of its data, for every event type the app emits."""
    board: Callable[[Any], BoardSpec] | None = None
    demo: str | None = None


@dataclass(frozen=True)
class Declared:
    """An app's declarations evaluated against its validated settings."""

    plugin: AppPlugin
    settings: Any
    buckets: tuple[BucketDecl, ...] = ()
    topics: tuple[TopicDecl, ...] = ()
    notifications: tuple[NotificationDecl, ...] = ()
    models: tuple[ModelDecl, ...] = ()

    @property
    def name(self) -> str:
        return self.plugin.name

    def phi_free_buckets(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.buckets if not b.phi)

    def board(self) -> BoardSpec | None:
        """The app's board for these settings (None when it declares none)."""
        return self.plugin.board(self.settings) if self.plugin.board is not None else None


@dataclass(frozen=True)
class DemoOptions:
    """What ``kawa demo <app>`` passes to an app's demo: the options every demo shares. An app reads the ones
    that mean something to it and ignores the rest.

    ``rate`` inputs per second; ``duration`` seconds (0: until Ctrl-C); ``count`` inputs at most (None: no
    limit); ``corrupt`` share of damaged inputs (to show dead-lettering); ``train_count`` inputs to train a
    model on when none exists; ``portal`` serve the portal; ``settings_file`` the YAML the app's settings
    came from (for jobs that re-read them); ``overrides`` ``--set KEY=VALUE`` pairs already applied to the
    settings."""

    rate: float | None = None
    duration: float = 0.0
    count: int | None = None
    corrupt: float | None = None
    train_count: int | None = None
    portal: bool = True
    settings_file: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


def declared(plugin: AppPlugin, section: Mapping[str, Any] | None = None, *, origin: str = "") -> Declared:
    """Validate ``section`` (the app's part of ``kawa.yaml``; ``origin`` says where it came from otherwise)
    with the plugin's settings model and evaluate its declarations. A bad section raises
    :class:`~kawa.errors.ConfigError` naming the field."""
    from pydantic import ValidationError

    from kawa.errors import ConfigError

    settings: Any = None
    if plugin.settings is not None:
        try:
            settings = plugin.settings.model_validate(dict(section or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(section)'}: {err['msg']}" for err in exc.errors()
            )
            where = origin or f"apps.{plugin.name} in kawa.yaml"
            raise ConfigError(f"{where} is not valid: {problems}") from None

    def run(fn: Callable[[Any], tuple[Any, ...]] | None) -> tuple[Any, ...]:
        return tuple(fn(settings)) if fn is not None else ()

    return Declared(
        plugin,
        settings,
        buckets=run(plugin.buckets),
        topics=run(plugin.topics),
        notifications=run(plugin.notifications),
        models=run(plugin.models),
    )
