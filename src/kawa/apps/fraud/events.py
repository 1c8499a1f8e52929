"""The fraud app's event schemas: payments in, decisions out, label events for the features.

- ``dev.kawa.fraud.transaction`` (:class:`FraudTransaction`): one payment, JSON, on the transactions topic;
  ``time`` is its event time in integer seconds since the epoch (UTC).
- ``dev.kawa.fraud.label`` (:class:`FraudLabel`): a label observed at ``observed_at``, on the same topic so
  that the features see payments and labels in one event-time order (terminal risk counts only labels
  already observed).
- ``dev.kawa.fraud.decision`` (:class:`FraudDecision`): what the scorer decided. ``card`` is the card's
  pseudonym (a keyed hash, see :meth:`~kawa.apps.fraud.settings.FraudSettings.card`), never the number.
"""

from __future__ import annotations

from pydantic import Field

from kawa.events.ref import EventRef
from kawa.events.schemas import EventSchema, register_schema

__all__ = ["DECISION_TYPE", "LABEL_TYPE", "TRANSACTION_TYPE", "FraudDecision", "FraudLabel", "FraudTransaction"]

TRANSACTION_TYPE = "dev.kawa.fraud.transaction"
LABEL_TYPE = "dev.kawa.fraud.label"
DECISION_TYPE = "dev.kawa.fraud.decision"


class FraudTransaction(EventSchema):
    """One payment: ids, event time (epoch seconds) and amount."""

    tx_id: int = Field(ge=0)
    customer_id: int = Field(ge=0, description="the card (pseudonymised before it leaves the function)")
    terminal_id: int = Field(ge=0)
    time: int = Field(ge=0, description="event time, seconds since the epoch (UTC)")
    amount: float = Field(ge=0, allow_inf_nan=False)


class FraudLabel(EventSchema):
    """A label of payment ``tx_id`` (at ``terminal_id``, ``tx_time``), known from ``observed_at``."""

    tx_id: int = Field(ge=0)
    terminal_id: int = Field(ge=0)
    tx_time: int = Field(ge=0)
    observed_at: int = Field(ge=0)
    is_fraud: bool
    source: str = "investigation"


class FraudDecision(EventSchema):
    """One decision. ``propensity``: the probability the policy had of this action (off-policy evaluation);
    ``latency_ms``: inside the function (parse → decision); ``time``: the payment's event time;
    ``decided_at``: wall clock, epoch seconds."""

    event: EventRef
    tx_id: int
    card: str
    terminal: int
    amount: float
    score: float
    action: str
    investigate: bool
    propensity: float
    reason: str
    model: str
    model_version: int
    latency_ms: float
    time: float
    decided_at: float


register_schema(TRANSACTION_TYPE, FraudTransaction)
register_schema(LABEL_TYPE, FraudLabel)
register_schema(DECISION_TYPE, FraudDecision)
