"""The sepsis app's event schemas, and the one pseudonymisation every one of them goes through.

Patient identifiers are PHI. Nothing the app writes carries one: every event below, every decision record
and every outcome names the patient by :func:`pseudonym` — ``HMAC-SHA256(key, "patient:" + reference)``,
16 hex digits — equal for one patient under one key (so joins and counts work), unrecoverable without it.

- ``dev.kawa.sepsis.charted`` (:class:`Charted`): the validated observations of one FHIR message for one
  patient, keyed by pseudonym (the ingest function → the scoring function);
- ``dev.kawa.sepsis.scored`` (:class:`Scored`): the scores after a charted event;
- ``dev.kawa.sepsis.alert`` (:class:`SepsisAlert`): an alert that reached clinicians;
- ``dev.kawa.sepsis.admitted`` (:class:`Admitted`): a patient seen for the first time (the census);
- ``dev.kawa.sepsis.metrics`` (:class:`MeasuredRule`): an alerting rule measured on a matured cohort.

Times: ``time`` is the observation's clinical time (epoch seconds), ``decided_at`` the wall clock.
"""

from __future__ import annotations

import hashlib
import hmac

from kawa.events.ref import EventRef
from kawa.events.schemas import EventSchema, register_schema

__all__ = [
    "ADMITTED_TYPE", "ALERT_TYPE", "CHARTED_TYPE", "METRICS_TYPE", "SCORED_TYPE", "Admitted", "Charted",
    "MeasuredRule", "Scored", "SepsisAlert", "pseudonym",
]

CHARTED_TYPE = "dev.kawa.sepsis.charted"
SCORED_TYPE = "dev.kawa.sepsis.scored"
ALERT_TYPE = "dev.kawa.sepsis.alert"
ADMITTED_TYPE = "dev.kawa.sepsis.admitted"
METRICS_TYPE = "dev.kawa.sepsis.metrics"


def pseudonym(reference: str, key: bytes) -> str:
    """The pseudonym of a FHIR patient reference (``Patient/<id>``) under ``key``."""
    return hmac.new(key, b"patient:" + reference.strip().encode(), hashlib.sha256).hexdigest()[:16]


class Charted(EventSchema):
    """One patient's observations from one FHIR message: rows ``[time_h, code, value]`` in time order
    (``time_h``: hours from :data:`kawa.apps.sepsis.fhir.EPOCH`; ``code``: :class:`~kawa.apps.sepsis.codes.Code`)."""

    patient: str
    rows: list[tuple[float, int, float]]
    received_at: float


class Scored(EventSchema):
    """The patient's scores at ``time`` after a charted event; ``band``: NEWS2 clinical risk (low 0-4,
    medium 5-6, high >= 7); ``verdict``: what the alert policy said (alert, below, suppressed,
    over-budget; silent: an alert computed in an experiment's silent arm, not shown); ``latency_ms``: from
    receipt of the FHIR message to the verdict (an alert is emitted in the same step)."""

    event: EventRef | None = None
    patient: str
    time: float
    news2: int
    qsofa: int
    sirs: int
    score: float
    model: str
    model_version: int
    band: str
    verdict: str
    latency_ms: float | None = None


class SepsisAlert(EventSchema):
    """An alert: the pseudonymised patient, the bedside scores, the score that alerted and its model, the
    observation time, and the latency from receipt of the FHIR message to the alert (ms)."""

    event: EventRef | None = None
    patient: str
    time: float
    news2: int
    qsofa: int
    sirs: int
    score: float
    threshold: float
    model: str
    model_version: int
    decided_at: float
    latency_ms: float


class MeasuredRule(EventSchema):
    """One alerting rule measured on a matured cohort (:mod:`kawa.apps.sepsis.metrics`): ``cohort`` says
    which (e.g. "simulated history: 600 admissions over 48 h, all matured")."""

    rule: str
    ppv: float | None
    sensitivity: float | None
    lead_time_h: float | None
    gain_vs_screen_h: float | None
    alerts_per_100_patient_days: float | None
    utility: float | None
    alerts: int
    septic: int
    cohort: str
    time: float


class Admitted(EventSchema):
    """A patient the app has not seen before (pseudonymised); ``time``: their first observation."""

    patient: str
    time: float


for _type, _schema in (
    (CHARTED_TYPE, Charted), (SCORED_TYPE, Scored), (ALERT_TYPE, SepsisAlert), (ADMITTED_TYPE, Admitted),
    (METRICS_TYPE, MeasuredRule),
):
    register_schema(_type, _schema)
