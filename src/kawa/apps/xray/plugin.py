"""The X-ray app as an :class:`~kawa.apps.plugin.AppPlugin`: what it needs, declared; the platform does the rest.

Installed as the ``xray`` entry point of the ``kawa.apps`` group (``kawa demo xray``, ``apps: {xray: {}}``
in ``kawa.yaml`` for ``kawa up``). Every name comes from :class:`~kawa.apps.xray.settings.XraySettings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kawa.apps.board import (
    BoardSpec,
    Column,
    Count,
    Counters,
    FlowGraph,
    ImageStrip,
    Marker,
    Table,
    TimeSeries,
)
from kawa.apps.plugin import AppPlugin, BucketDecl, Declared, ModelDecl, NotificationDecl, TopicDecl
from kawa.apps.xray.events import ASSESSED_TYPE, XrayAssessed
from kawa.apps.xray.settings import XraySettings

if TYPE_CHECKING:

    from kawa.config import KawaConfig
    from kawa.functions import App



def buckets(s: XraySettings) -> tuple[BucketDecl, ...]:
    return (
        BucketDecl(s.incoming_bucket, phi=True, description="uploaded radiographs (PNG, JPEG, DICOM)"),
        BucketDecl(s.processed_bucket, phi=False, description="annotated images with the detected text redacted"),
        BucketDecl(s.anonymized_bucket, phi=False, description="de-identified images (no patient data)"),
    )


def topics(s: XraySettings) -> tuple[TopicDecl, ...]:
    return (
        TopicDecl(s.images_topic, partitions=s.partitions, description="notifications of the incoming bucket"),
        TopicDecl(
            s.results_topic,
            partitions=s.partitions,
            event_type=ASSESSED_TYPE,
            schema=XrayAssessed,
            description="one assessment per image",
        ),
        TopicDecl(s.dead_letter_topic, partitions=s.partitions, description="uploads the function could not assess"),
        TopicDecl(s.deid_dead_letter_topic, partitions=s.partitions, description="uploads the route rejected"),
    )


def notifications(s: XraySettings) -> tuple[NotificationDecl, ...]:
    return (NotificationDecl(s.incoming_bucket, s.images_topic, events=("s3:ObjectCreated:*",)),)


def models(s: XraySettings) -> tuple[ModelDecl, ...]:
    return (
        ModelDecl(
            s.model_name,
            trainer="kawa.apps.xray.train:train",
            alias=s.model_alias,
            description="pneumonia risk from a downsampled, redacted radiograph (ONNX)",
        ),
    )


def functions(s: XraySettings, config: KawaConfig) -> App:
    """The ``risk-assessment`` function, writing its rows under the platform's home unless the settings say."""
    from kawa.apps.xray.pipeline import build_app

    return build_app(s, home=config.home)


def board(s: XraySettings) -> BoardSpec:
    """Uploaded → processed, then what came of them (anonymized copies, dead letters); the newest images of
    each bucket (pneumonia marked on the thumbnail); the results, each row linking to its annotated image;
    results over time by label and by model version; and the flow."""
    marker = Marker("label", "Pneumonia", "pneumonia")
    return BoardSpec(
        title="X-ray pneumonia risk",
        panels=(
            Counters(
                "pipeline",
                (
                    Count("uploaded", "Uploaded", bucket=s.incoming_bucket),
                    Count("processed", "Processed", bucket=s.processed_bucket),
                ),
                title="Pipeline",
            ),
            Counters(  # two branches of one upload: neither bounds the other
                "outcomes",
                (
                    Count("anonymized", "Anonymized", bucket=s.anonymized_bucket),
                    Count("dead_lettered", "Dead-lettered", topics=(s.dead_letter_topic, s.deid_dead_letter_topic)),
                ),
                title="Outcomes",
                ordered=False,
            ),
            *(
                ImageStrip(name, bucket, title, results_topic=s.results_topic, marker=marker, limit=10)
                for name, bucket, title in (
                    ("uploaded", s.incoming_bucket, "Last uploaded"),
                    ("processed", s.processed_bucket, "Last processed"),
                    ("anonymized", s.anonymized_bucket, "Last anonymized"),
                )
            ),
            Table(
                "results",
                s.results_topic,
                (
                    Column("time", "time", "time"),
                    Column("label", "label"),
                    Column("risk", "risk"),
                    Column("model", "model"),
                    Column("model_version", "version"),
                    Column("latency_ms", "latency", "ms"),
                ),
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


plugin = AppPlugin(
    name="xray",
    title="X-ray pneumonia risk",
    description="Chest X-rays: pneumonia risk with a trained model, and de-identified copies without PHI.",
    settings=XraySettings,
    buckets=buckets,
    topics=topics,
    notifications=notifications,
    functions=functions,
    routes=("kawa.apps.xray.deid:deid_routes",),
    models=models,
    events={ASSESSED_TYPE: XrayAssessed},
    board=board,
    demo="kawa.apps.xray.demo:demo",
)


def declare(settings: XraySettings) -> Declared:
    """The app's declarations for ``settings`` (already validated)."""
    return Declared(
        plugin,
        settings,
        buckets=buckets(settings),
        topics=topics(settings),
        notifications=notifications(settings),
        models=models(settings),
    )
