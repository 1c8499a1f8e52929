"""Installed apps for the portal's tests: the X-ray app as its plugin declares it, and a way to install any
app view on a platform (``platform.apps``, as the platform does for the apps it starts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kawa.apps.board import BoardSpec, Count, Counters
from kawa.apps.plugin import AppPlugin, BucketDecl, Declared, TopicDecl
from kawa.log.base import TopicSpec


@dataclass(frozen=True)
class InstalledApp:
    """What the portal reads of a running app (see :class:`kawa.portal.apps.AppView`)."""

    name: str
    declared: Declared
    board: BoardSpec | None
    routes: Any = None
    functions: Any = None


def install(platform: Any, app: InstalledApp) -> InstalledApp:
    apps = dict(getattr(platform, "apps", None) or {})
    apps[app.name] = app
    platform.apps = apps
    return app


def xray_board(s: Any) -> BoardSpec:
    """The X-ray app's own board (what its plugin declares)."""
    from kawa.apps.xray.plugin import board

    return board(s)


def xray_view(s: Any) -> InstalledApp:
    from kawa.apps.xray.plugin import declare

    return InstalledApp("xray", declare(s), xray_board(s))


def xray_app(platform: Any) -> Any:
    """The X-ray app's buckets and topics created and the app installed; returns its settings."""
    from kawa.apps.xray.settings import XraySettings

    settings = XraySettings()
    for bucket in settings.buckets():
        platform.store.create_bucket(bucket)
    for topic in (settings.images_topic, settings.results_topic, settings.dead_letter_topic):
        platform.log.create_topic(TopicSpec(topic), exist_ok=True)
    install(platform, xray_view(settings))
    return settings


def counts(board: dict[str, Any]) -> dict[str, int]:
    """Every counter of a board built as JSON, by label."""
    return {
        c["label"]: c["value"]
        for name in board["panels"]
        if board[name]["kind"] == "counters"
        for c in board[name]["counts"]
    }


def tally_board(bucket: str = "tally-in", topic: str = "tally-events") -> BoardSpec:
    return BoardSpec(
        title="Tally",
        panels=(
            Counters("tally", (Count("received", "Received", bucket=bucket), Count("announced", "Announced",
                                                                                     topics=(topic,))),
                     title="Tally"),
        ),
    )


def tally_view(bucket: str = "tally-in", topic: str = "tally-events") -> InstalledApp:
    """A tiny second app, unknown to the portal's code: one bucket, one topic, one counters panel."""
    declared = Declared(AppPlugin("tally"), None, buckets=(BucketDecl(bucket),), topics=(TopicDecl(topic),))
    return InstalledApp("tally", declared, tally_board(bucket, topic))
