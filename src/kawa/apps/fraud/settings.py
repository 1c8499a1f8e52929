"""The fraud app's settings (``apps.fraud`` in ``kawa.yaml``): topics, the scorer, the decision policy, replay.

One frozen model, read by the plugin, the streaming function, the replay and the demo. Nothing here reads the
environment; the card key (:attr:`FraudSettings.card_key`) should be set per deployment.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kawa.apps.fraud.decisions import DecisionPolicy


class FraudSettings(BaseModel):
    """Everything the streaming fraud app lets you change without touching code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transactions_topic: str = "fraud-transactions"
    decisions_topic: str = "fraud-decisions"
    blocked_topic: str = Field("fraud-blocked", description="blocked payments (for the card system)")
    investigated_topic: str = Field("fraud-investigated", description="the investigators' case queue")
    passed_topic: str = "fraud-passed"
    outcomes_topic: str = Field("outcomes", description="where outcome events go (the outcome joiner reads it)")
    records_topic: str = Field("decisions", description="where ctx.decide writes decision records")
    dead_letter_topic: str = "fraud-transactions.dlq"

    model_name: str | None = Field(None, description="registered model to score with; None: the local scorer")
    model_alias: str = "champion"
    experiment: str | None = Field(None, description="experiment that allocates cards to arms (unit = card)")

    card_key: SecretStr = Field(
        SecretStr("kawa-fraud-demo-key"),
        description="HMAC key pseudonymising card numbers in events and records; set your own",
    )

    capacity: int = Field(100, ge=0, description="rule investigations a day (the top-k budget)")
    explore: float = Field(0.001, ge=0, lt=1, description="probability of a random investigation")
    explore_capacity: int = Field(5, ge=0, description="random investigations a day at most")
    block_at: float = Field(0.95, gt=0, le=1)
    first_threshold: float = Field(0.5, ge=0, le=1)

    memo_size: int = Field(100_000, ge=0, description="decisions remembered by payment id (redeliveries)")

    customers: int = Field(500, ge=1, description="replay/demo: simulated customers")
    days: int = Field(30, ge=1, description="replay/demo: simulated days")
    drift_day: int | None = Field(None, ge=0, description="replay/demo: the new fraud pattern starts this day")
    seed: int = 0
    speed: float = Field(8_640.0, gt=0, description="replay: event seconds per wall second (a day in 10 s)")
    baseline_customers: int = Field(300, ge=1, description="customers of the simulation the baseline tree is fit on")

    def action_topic(self, action: str) -> str:
        """The topic that receives a copy of each decision with ``action`` (the board counts them)."""
        return {"block": self.blocked_topic, "investigate": self.investigated_topic}.get(action, self.passed_topic)

    @property
    def model_ref(self) -> str | None:
        return f"{self.model_name}@{self.model_alias}" if self.model_name else None

    def policy(self) -> DecisionPolicy:
        return DecisionPolicy(
            capacity=self.capacity,
            explore=self.explore,
            explore_capacity=self.explore_capacity,
            block_at=self.block_at,
            first_threshold=self.first_threshold,
        )

    def card(self, customer_id: int | str) -> str:
        """The pseudonym of a card: a keyed hash (HMAC-SHA256, 16 hex digits), the same for every event of it,
        not reversible without the key."""
        key = self.card_key.get_secret_value().encode()
        return hmac.new(key, str(customer_id).encode(), hashlib.sha256).hexdigest()[:16]
