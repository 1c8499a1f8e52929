"""Delayed outcomes from the simulator's ground truth, as :class:`~kawa.monitor.records.OutcomeEvent` s.

One outcome per patient, by entity (the pseudonym the decisions carry): confirmed sepsis is label 1 at the
Sepsis-3 onset, observed when it is confirmed (the end of the Sepsis-3 window, or discharge); a patient who
never becomes septic is label 0 at discharge, observed then. :func:`outcome_events` is pure;
:func:`publish` writes them to the outcomes topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from kawa.apps.sepsis.care import Outcomes
from kawa.apps.sepsis.fhir import EPOCH, default_subject
from kawa.monitor.records import OutcomeEvent

if TYPE_CHECKING:
    from kawa.log.base import EventLog

__all__ = ["SOURCE", "outcome_events", "publish"]

SOURCE = "kawa://sepsis/outcomes"
_EPOCH_S = EPOCH.timestamp()


def epoch_s(time_h: float) -> float:
    """Seconds since the Unix epoch of a simulation time (hours from :data:`kawa.apps.sepsis.fhir.EPOCH`)."""
    return _EPOCH_S + time_h * 3600.0


def outcome_events(
    out: Outcomes,
    alias: Callable[[str], str],
    *,
    since_h: float = -np.inf,
    until_h: float = np.inf,
    subject: Callable[[int], str] = default_subject,
) -> list[OutcomeEvent]:
    """The outcomes observed in ``[since_h, until_h)`` (simulation hours), in observation order; ``alias``
    maps a patient reference to its pseudonym."""
    observed = np.where(out.sepsis, out.confirmed_h, out.discharge_h)
    at = np.where(out.sepsis, out.onset_h, out.discharge_h)
    rows = np.flatnonzero((observed >= since_h) & (observed < until_h))
    rows = rows[np.argsort(observed[rows], kind="stable")]
    events = []
    for i in rows.tolist():
        entity = alias(subject(i))
        events.append(
            OutcomeEvent(
                observed_at=epoch_s(float(observed[i])), entity=entity, at=epoch_s(float(at[i])),
                label=int(out.sepsis[i]), id=f"sepsis:{entity}",
            )
        )
    return events


def publish(log: EventLog, topic: str, events: Iterable[OutcomeEvent]) -> int:
    """Write ``events`` to ``topic`` (keyed by entity); how many."""
    from kawa.events.cloudevents import to_kafka

    producer = log.producer()
    n = 0
    try:
        for e in events:
            key, value, headers = to_kafka(e.to_event(SOURCE, id=e.id))
            producer.produce(topic, value, key=key, headers=headers)
            n += 1
        producer.flush()
    finally:
        producer.close()
    return n
