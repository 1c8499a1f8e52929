"""The sepsis app's settings: the ``apps.sepsis`` section of ``kawa.yaml``.

One frozen model (``extra="forbid"``: a typo is an error naming the field): topic names, the pseudonym key,
the score source, the alert policy, the outcome windows and the simulated hospital of the demo. Nothing here
reads the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kawa.apps.sepsis.settings import SimSettings

DEMO_KEY = "kawa-sepsis-demo-key: replace me in kawa.yaml"
"""The pseudonym key of the demo. A deployment sets its own secret (``apps.sepsis.pseudonym_key``)."""


class SepsisSettings(BaseModel):
    """Everything the sepsis app lets you change without touching code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    observations_topic: str = Field("sepsis.observations", description="FHIR R4 Observation / Bundle JSON in")
    charted_topic: str = Field("sepsis.charted", description="validated observations per pseudonymised patient")
    scores_topic: str = Field("sepsis.scores", description="one score event per charted event")
    alerts_topic: str = Field("sepsis.alerts", description="alerts for clinicians (the board's alert stream)")
    census_topic: str = Field("sepsis.census", description="one event per patient first seen")
    metrics_topic: str = Field("sepsis.metrics", description="alerting rules measured on matured cohorts")
    outcomes_topic: str = Field("outcomes", description="delayed outcomes (kawa.monitor.outcome) for monitoring")
    decisions_topic: str = Field("decisions", description="decision records (kawa.monitor.decision)")
    dead_letter_topic: str = Field("sepsis.observations.dlq", description="resources the app could not use")
    partitions: int = Field(2, ge=1, description="partitions of the observations and charted topics")
    http_port: int | None = Field(
        None, ge=0, le=65535, description="serve POST <http_path> (FHIR JSON) on this port; None: topic only"
    )
    http_host: str = Field("127.0.0.1", description="bind address of the FHIR webhook (no authentication)")
    http_path: str = Field("/fhir", pattern=r"^/[A-Za-z0-9/_.-]*$", description="path of the FHIR webhook")

    fhir_validate: bool = Field(
        True, description="also validate every message with fhir.resources (R4 models): ~300 Bundles/s a core"
    )
    pseudonym_key: SecretStr = Field(
        SecretStr(DEMO_KEY), description="HMAC key of the patient pseudonyms (a secret: set your own)"
    )

    score_source: Literal["news2", "model"] = Field(
        "news2", description="news2: the NEWS2 aggregate is the score; model: ctx.model(model_ref) scores"
    )
    model_name: str = "sepsis-risk"
    model_alias: str = "champion"
    experiment: str | None = Field(None, description="experiment the model is served under (unit: the pseudonym)")

    threshold: float = Field(7.0, description="alert when NEWS2 is >= this (7: 'high' clinical risk)")
    model_threshold: float = Field(0.3, description="alert when the model's risk is >= this (score_source: model)")
    suppress_h: float = Field(12.0, ge=0, description="no second alert for a patient within this many hours")
    budget_per_h: int = Field(60, ge=1, description="at most this many alerts in any hour (clinician capacity)")

    window_h: float = Field(12.0, gt=0, description="an alert up to this many hours before onset is a hit")
    grace_h: float = Field(3.0, ge=0, description="... or up to this many hours after onset")

    sim: SimSettings = Field(
        default_factory=lambda: SimSettings(patients=200, hours=24.0),
        description="the simulated hospital of the demo",
    )
    speed: float = Field(720.0, gt=0, description="demo: simulated seconds per wall second (720: a day in 2 min)")
    block_min: float = Field(15.0, gt=0, description="demo: minutes of simulated time per published Bundle")
    corrupt_fraction: float = Field(0.01, ge=0, le=1, description="demo: share of damaged FHIR messages")
    history_admissions: int = Field(
        600, ge=0, description="demo: admissions of the simulated history the rules are measured on (0: none)"
    )

    @property
    def model_ref(self) -> str | None:
        """The model that scores (None: NEWS2 does)."""
        return f"{self.model_name}@{self.model_alias}" if self.score_source == "model" else None

    @property
    def alert_threshold(self) -> float:
        """The threshold of the score in use."""
        return self.threshold if self.model_ref is None else self.model_threshold

    def key(self) -> bytes:
        return self.pseudonym_key.get_secret_value().encode()
