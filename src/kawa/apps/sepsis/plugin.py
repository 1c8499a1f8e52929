"""The sepsis app as an :class:`~kawa.apps.plugin.AppPlugin`: FHIR observations in, alerts out, measured.

Register it as the ``sepsis`` entry point of the ``kawa.apps`` group (``kawa demo sepsis``; ``apps: {sepsis:
{}}`` in ``kawa.yaml`` for ``kawa up``). Every name comes from
:class:`~kawa.apps.sepsis.app_settings.SepsisSettings`. No bucket: everything moves on topics, and no topic
carries a patient identifier except the FHIR input (and its dead letters, which keep the rejected message).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kawa.apps.board import BoardSpec, Column, Count, Counters, FlowGraph, Table, TimeSeries
from kawa.apps.plugin import AppPlugin, ModelDecl, TopicDecl
from kawa.apps.sepsis.app_settings import SepsisSettings
from kawa.apps.sepsis.events import (
    ADMITTED_TYPE,
    ALERT_TYPE,
    CHARTED_TYPE,
    METRICS_TYPE,
    SCORED_TYPE,
    Admitted,
    Charted,
    MeasuredRule,
    Scored,
    SepsisAlert,
)

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.functions import App


def topics(s: SepsisSettings) -> tuple[TopicDecl, ...]:
    return (
        TopicDecl(s.observations_topic, partitions=s.partitions,
                  description="FHIR R4 Observation or Bundle JSON (holds patient ids: PHI); key by patient"),
        TopicDecl(s.charted_topic, partitions=s.partitions, event_type=CHARTED_TYPE, schema=Charted,
                  description="validated observations per pseudonymised patient"),
        TopicDecl(s.scores_topic, event_type=SCORED_TYPE, schema=Scored, description="scores after each chart"),
        TopicDecl(s.alerts_topic, event_type=ALERT_TYPE, schema=SepsisAlert, description="alerts for clinicians"),
        TopicDecl(s.census_topic, event_type=ADMITTED_TYPE, schema=Admitted, description="patients first seen"),
        TopicDecl(s.metrics_topic, event_type=METRICS_TYPE, schema=MeasuredRule,
                  description="alerting rules measured on matured cohorts"),
        TopicDecl(s.outcomes_topic, description="confirmed sepsis / discharge (kawa.monitor.outcome)"),
        TopicDecl(s.decisions_topic, description="decision records (kawa.monitor.decision)"),
        TopicDecl(s.dead_letter_topic, description="FHIR messages the app could not use, with the reason"),
    )


def models(s: SepsisSettings) -> tuple[ModelDecl, ...]:
    """The ML score, when the settings ask for it (``score_source: model``); NEWS2 needs no model."""
    if s.model_ref is None:
        return ()
    return (
        ModelDecl(s.model_name, trainer="kawa.apps.sepsis.train:job", alias=s.model_alias,
                  description="sepsis risk (LightGBM) from the 105 streaming features"),
    )


def functions(s: SepsisSettings, config: KawaConfig) -> App:
    from kawa.apps.sepsis.pipeline import build_app

    return build_app(s)


def board(s: SepsisSettings) -> BoardSpec:
    """The census, the FHIR messages and what came of them; the alert stream (pseudonymised); alerts and
    scores over time (by NEWS2 risk band and by the policy's verdict); and the flow."""
    return BoardSpec(
        title="Sepsis early warning",
        panels=(
            Counters(
                "census",
                (
                    Count("census", "Patients seen", topics=(s.census_topic,)),
                    Count("messages", "FHIR messages", topics=(s.observations_topic,)),
                    Count("scored", "Charts scored", topics=(s.scores_topic,)),
                    Count("alerts", "Alerts", topics=(s.alerts_topic,)),
                    Count("dead_lettered", "Dead-lettered", topics=(s.dead_letter_topic,)),
                ),
                title="Census and alerts",
                ordered=False,
            ),
            Table(
                "alerts",
                s.alerts_topic,
                (
                    Column("time", "observed", "time"),
                    Column("patient", "patient (pseudonym)"),
                    Column("news2", "NEWS2"),
                    Column("qsofa", "qSOFA"),
                    Column("sirs", "SIRS"),
                    Column("score", "score"),
                    Column("model", "model"),
                    Column("latency_ms", "latency", "ms"),
                ),
                title="Alert stream",
                limit=15,
            ),
            Table(
                "measured",
                s.metrics_topic,
                (
                    Column("rule", "rule"),
                    Column("ppv", "PPV (hit rate)", "percent"),
                    Column("sensitivity", "sensitivity", "percent"),
                    Column("lead_time_h", "lead time (h)"),
                    Column("gain_vs_screen_h", "earlier than screening (h)"),
                    Column("alerts_per_100_patient_days", "alerts / 100 patient-days"),
                    Column("utility", "PhysioNet utility"),
                    Column("cohort", "matured cohort"),
                ),
                title="PPV, sensitivity and lead time against the baselines (matured cohorts)",
                limit=8,
            ),
            TimeSeries("alerts_over_time", s.alerts_topic, "Alerts over time", split_by="model",
                       time_field="@received"),  # the demo runs the clinical clock faster than the wall
            TimeSeries("scores_by_band", s.scores_topic, "Scores by NEWS2 risk band", split_by="band",
                       time_field="@received"),
            TimeSeries("scores_by_verdict", s.scores_topic, "Scores by alert verdict", split_by="verdict",
                       time_field="@received"),
            FlowGraph(),
        ),
        dead_letter_topics=(s.dead_letter_topic,),
    )


plugin = AppPlugin(
    name="sepsis",
    title="Sepsis early warning",
    description="FHIR R4 observations → streaming features → qSOFA/SIRS/NEWS2 (or a model) → alerts, measured.",
    settings=SepsisSettings,
    topics=topics,
    functions=functions,
    routes=("kawa.apps.sepsis.routes:fhir_routes",),
    models=models,
    events={CHARTED_TYPE: Charted, SCORED_TYPE: Scored, ALERT_TYPE: SepsisAlert, ADMITTED_TYPE: Admitted,
            METRICS_TYPE: MeasuredRule},
    board=board,
    demo="kawa.apps.sepsis.demo:demo",
)
