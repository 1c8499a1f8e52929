"""The fraud app as an :class:`~kawa.apps.plugin.AppPlugin`: topics, the streaming function, schemas, a board.

To be installed as the ``fraud`` entry point of the ``kawa.apps`` group (``kawa demo fraud``; ``apps: {fraud: {}}``
in ``kawa.yaml`` for ``kawa up``). Every name comes from :class:`~kawa.apps.fraud.settings.FraudSettings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kawa.apps.board import BoardSpec, Column, Count, Counters, FlowGraph, Table, TimeSeries
from kawa.apps.fraud.events import (
    DECISION_TYPE,
    LABEL_TYPE,
    TRANSACTION_TYPE,
    FraudDecision,
    FraudLabel,
    FraudTransaction,
)
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.plugin import AppPlugin, ModelDecl, TopicDecl

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.functions import App


def topics(s: FraudSettings) -> tuple[TopicDecl, ...]:
    """One partition each: the streaming state is in-process and needs the log's order (see pipeline.py)."""
    copies = (
        (s.blocked_topic, "blocked payments, for the card system"),
        (s.investigated_topic, "cards to investigate: the investigators' case queue"),
        (s.passed_topic, "payments let through"),
    )
    return (
        TopicDecl(s.transactions_topic, event_type=TRANSACTION_TYPE, schema=FraudTransaction,
                  description="payments (and the label events the features read), in event-time order"),
        TopicDecl(s.decisions_topic, event_type=DECISION_TYPE, schema=FraudDecision,
                  description="one decision a payment: score, action, propensity"),
        *(TopicDecl(name, event_type=DECISION_TYPE, schema=FraudDecision, description=text) for name, text in copies),
        TopicDecl(s.outcomes_topic, description="chargebacks and investigation results (kawa.monitor.outcome)"),
        TopicDecl(s.records_topic, description="decision records (kawa.monitor.decision) of ctx.decide"),
        TopicDecl(s.dead_letter_topic, description="payments the function could not decide, with the reason"),
    )  # fmt: skip


def models(s: FraudSettings) -> tuple[ModelDecl, ...]:
    if s.model_name is None:
        return ()
    return (ModelDecl(s.model_name, alias=s.model_alias, description="P(fraud) of a payment's 15 features"),)


def functions(s: FraudSettings, config: KawaConfig) -> App:
    """The scoring function; without a registered model the handbook's tree is fit now (about a second), so
    the first payment does not wait for it."""
    from kawa.apps.fraud.pipeline import build_app, fit_baseline

    scorer = fit_baseline(s.baseline_customers, seed=s.seed) if s.model_ref is None else None
    return build_app(s, scorer=scorer)


def board(s: FraudSettings) -> BoardSpec:
    """Payments and what was decided; cases opened against outcomes arrived; the newest decisions; the payment
    rate and decisions by action. (The label backlog, decisions without a matured outcome, needs the outcome
    join; the board's counters count events per topic, so it is not shown.)"""
    return BoardSpec(
        title="Card fraud: streaming decisions",
        panels=(
            Counters(
                "decisions",
                (
                    Count("transactions", "Transactions", topics=(s.decisions_topic, s.dead_letter_topic)),
                    Count("blocked", "Blocked", topics=(s.blocked_topic,)),
                    Count("investigated", "Investigated", topics=(s.investigated_topic,)),
                    Count("passed", "Passed", topics=(s.passed_topic,)),
                    Count("dead_lettered", "Dead-lettered", topics=(s.dead_letter_topic,)),
                ),
                title="Payments",
                ordered=False,
            ),
            Counters(  # the label backlog needs a join the board cannot do: these two bound it
                "labels",
                (
                    Count("cases", "Cases opened", topics=(s.investigated_topic,)),
                    Count("outcomes", "Outcomes arrived", topics=(s.outcomes_topic,)),
                ),
                title="Delayed labels",
                ordered=False,
            ),
            Table(
                "recent",
                s.decisions_topic,
                (
                    Column("time", "event time", "time"),
                    Column("card", "card"),
                    Column("terminal", "terminal"),
                    Column("amount", "amount"),
                    Column("score", "score"),
                    Column("action", "action"),
                    Column("propensity", "propensity"),
                    Column("model_version", "version"),
                    Column("latency_ms", "latency", "ms"),
                ),
                title="Latest decisions",
            ),
            # A replay runs history at a speed factor: chart when each decision was made, not the payment's date.
            TimeSeries("rate", s.decisions_topic, "Transactions", time_field="@received"),
            TimeSeries("by_action", s.decisions_topic, "Decisions by action", split_by="action",
                       time_field="@received"),
            FlowGraph(),
        ),
        dead_letter_topics=(s.dead_letter_topic,),
    )


plugin = AppPlugin(
    name="fraud",
    title="Card fraud",
    description="Card payments scored in the stream: block, investigate or pass, with delayed chargebacks.",
    settings=FraudSettings,
    topics=topics,
    functions=functions,
    models=models,
    events={TRANSACTION_TYPE: FraudTransaction, LABEL_TYPE: FraudLabel, DECISION_TYPE: FraudDecision},
    board=board,
    demo="kawa.apps.fraud.demo:demo",
)
