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
        BucketDecl(s.processed_bucket, phi=True, description="annotated images with the detected text redacted"),
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
    """Uploaded → processed → anonymized, the newest images of each bucket (pneumonia marked), the results
    (each row linking to its image), results over time by label and by model version, and the flow."""
    pneumonia = Marker("label", "Pneumonia", label="pneumonia")
    strips = tuple(
        ImageStrip(f"{name}-images", bucket, title=title, results_topic=s.results_topic, marker=pneumonia)
        for name, bucket, title in (
            ("uploaded", s.incoming_bucket, "Uploaded"),
            ("processed", s.processed_bucket, "Processed (annotated)"),
            ("anonymized", s.anonymized_bucket, "Anonymized"),
        )
    )
    return BoardSpec(
        title="X-ray pneumonia risk",
        panels=(
            Counters(
                "pipeline",
                (
                    Count("uploaded", "Uploaded", bucket=s.incoming_bucket),
                    Count("processed", "Processed", bucket=s.processed_bucket),
                    Count("anonymized", "Anonymized", bucket=s.anonymized_bucket),
                ),
                title="Pipeline",
            ),
            Counters(
                "dead-letters",
                (
                    Count("function", "Not assessed", topics=(s.dead_letter_topic,)),
                    Count("route", "Not de-identified", topics=(s.deid_dead_letter_topic,)),
                ),
                title="Dead letters",
                ordered=False,
                action="deadletters.read",
            ),
            *strips,
            Table(
                "results",
                s.results_topic,
                (
                    Column("time", "Time", "time"),
                    Column("key", "Image"),
                    Column("label", "Label"),
                    Column("risk", "Risk", "percent"),
                    Column("model_version", "Model version"),
                    Column("latency_ms", "Latency", "ms"),
                ),
                title="Latest results",
                link_bucket_field="bucket",
                link_key_field="key",
            ),
            TimeSeries("by-label", s.results_topic, title="Results by label", split_by="label"),
            TimeSeries("by-model", s.results_topic, title="Results by model version", split_by="model_version"),
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
