"""Installed apps for the portal's tests: the X-ray app's board declared the way its plugin does (a test
helper until ``kawa.apps.xray.plugin`` provides the official one), and a way to install any app view on a
platform (``platform.apps``, as the platform does for the apps it starts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kawa.apps.board import BoardSpec, Column, Count, Counters, FlowGraph, ImageStrip, Marker, Table, TimeSeries
from kawa.apps.plugin import AppPlugin, BucketDecl, Declared, NotificationDecl, TopicDecl
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
    marker = Marker("label", "Pneumonia", "pneumonia")
    strip = {"results_topic": s.results_topic, "marker": marker, "limit": 10}
    return BoardSpec(
        title="X-ray pipeline",
        panels=(
            Counters(
                "pipeline",
                (Count("uploaded", "Uploaded", bucket=s.incoming_bucket),
                 Count("processed", "Processed", bucket=s.processed_bucket)),
                title="Pipeline",
            ),
            Counters(
                "outcomes",
                (Count("anonymized", "Anonymized", bucket=s.anonymized_bucket),
                 Count("dead_lettered", "Dead-lettered", topics=(s.dead_letter_topic, s.deid_dead_letter_topic))),
                ordered=False,
            ),
            ImageStrip("uploaded", s.incoming_bucket, "Last uploaded", **strip),
            ImageStrip("processed", s.processed_bucket, "Last processed", **strip),
            ImageStrip("anonymized", s.anonymized_bucket, "Last anonymized", **strip),
            Table(
                "results",
                s.results_topic,
                (Column("time", "time", "time"), Column("label", "label"), Column("risk", "risk"),
                 Column("model", "model"), Column("model_version", "version"), Column("latency_ms", "latency", "ms")),
                title="Latest results",
                link_bucket_field="processed_bucket",
                link_key_field="processed_key",
            ),
            TimeSeries("by_label", s.results_topic, "Results by label", split_by="label"),
            TimeSeries("by_version", s.results_topic, "Images by model version", split_by="model_version"),
            FlowGraph(),
        ),
        dead_letter_topics=(s.dead_letter_topic, s.deid_dead_letter_topic),
    )


def xray_view(s: Any) -> InstalledApp:
    declared = Declared(
        AppPlugin("xray", title="X-ray"),
        s,
        buckets=(BucketDecl(s.incoming_bucket, phi=True), BucketDecl(s.processed_bucket),
                 BucketDecl(s.anonymized_bucket)),
        topics=(TopicDecl(s.images_topic), TopicDecl(s.results_topic), TopicDecl(s.dead_letter_topic),
                TopicDecl(s.deid_dead_letter_topic)),
        notifications=(NotificationDecl(s.incoming_bucket, s.images_topic),),
    )
    return InstalledApp("xray", declared, xray_board(s))


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
