"""The fraud app's streaming function: payment → features → score → decision, in event-time order.

::

    topic fraud-transactions ──▶ score-transactions
        dev.kawa.fraud.transaction: update the card's and the terminal's window state (features.py)
            → score (the local scorer, or ctx.model(model_ref, experiment=..., unit=card))
            → decide (decisions.py: block / investigate / pass, the investigators' budget, a propensity)
            ├─▶ topic fraud-decisions   dev.kawa.fraud.decision (the card pseudonymised)
            ├─▶ topic fraud-blocked | fraud-investigated | fraud-passed   the same, by action
            └─▶ topic decisions         kawa.monitor.decision (ctx.decide: entity = card, features snapshot)
        dev.kawa.fraud.label: a label observed now feeds the terminal risk (features.observe_label)
    malformed or late payment ─▶ topic fraud-transactions.dlq with the reason

**The state is in-process and keyed** (one :class:`StreamScorer` per app instance, holding
:class:`~kawa.apps.fraud.features.FeatureState` and the day's decision state): the function runs as one
thread replica, one event at a time, on one partition, so events reach it in the order of the log. A second
process would hold a second state; scale by partitioning by card (the customer part) and repartitioning by
terminal, as :mod:`~kawa.apps.fraud.features` describes. The state is rebuilt by replaying the topic.
A redelivered payment (same ``tx_id``) gets the decision it got the first time and does not count twice; a
payment retried after its scoring failed is scored on the features it got the first time.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from kawa.apps.fraud.decisions import Decision, DecisionPolicy, DecisionState, decide
from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.events import (
    DECISION_TYPE,
    LABEL_TYPE,
    TRANSACTION_TYPE,
    FraudDecision,
    FraudLabel,
    FraudTransaction,
)
from kawa.apps.fraud.features import FeatureSpec, FeatureState, Outcome, Payment, observe_label, update
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.fraud.transactions import SECONDS_PER_DAY
from kawa.events.ref import EventRef
from kawa.events.schemas import read_data
from kawa.functions import App, Context, PermanentError

if TYPE_CHECKING:
    from kawa.events import CloudEvent
    from kawa.functions.types import Predictor

FUNCTION = "score-transactions"
EPOCH_SPEC = FeatureSpec(start_date=date(1970, 1, 1))
"""Features on epoch seconds (UTC): day, weekday and hour read the same as on the simulator's clock."""
FEATURES = EPOCH_SPEC.names

Scorer = Callable[[Sequence[float]], float]
"""A local scorer: the features of one payment (in :data:`FEATURES` order) → its fraud score in [0, 1]."""


@dataclass(frozen=True)
class LocalModel:
    """A scorer wrapped as a predictor (``name``, ``version``, ``predict``) for ``ctx.decide``."""

    scorer: Scorer
    name: str = "fraud-baseline"
    version: int = 1

    def predict(self, x: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([self.scorer(row) for row in np.asarray(x, dtype=np.float64)], dtype=np.float64)


def tree_scorer(model: Any) -> Scorer:
    """A fitted scikit-learn classifier (``predict_proba``) as a :data:`Scorer`."""

    def score(features: Sequence[float]) -> float:
        return float(model.predict_proba(np.asarray(features, dtype=np.float64)[None, :])[0, 1])

    return score


def fit_baseline(customers: int = 300, days: int = 40, seed: int = 0) -> Scorer:
    """The handbook's depth-2 decision tree fit on a small simulation (oracle labels, 7-day delay): the default
    scorer when no registered model is configured (about a second at 300 customers)."""
    from kawa.apps.fraud.backfill import numpy_features
    from kawa.apps.fraud.baseline import fit_tree
    from kawa.apps.fraud.labels import oracle_labels
    from kawa.apps.fraud.sim import SimSettings, simulate

    tx = simulate(SimSettings(customers=customers, days=days, seed=seed, drift_day=None)).tx
    x = numpy_features(tx, oracle_labels(tx, 7))
    train = tx.day >= min(7, days - 1)  # the first week has no terminal history yet
    return tree_scorer(fit_tree(x[train], tx.is_fraud[train]))


def uniform(seed: int, tx_id: int) -> float:
    """A U[0, 1) draw that depends only on the payment (so a replay explores the same payments)."""
    digest = hashlib.sha256(f"{seed}:{tx_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass
class StreamScorer:
    """The keyed streaming state of one app instance: features, the day's decisions, recent decisions by id.

    Thread-safe (one lock); the function host calls it one event at a time anyway."""

    policy: DecisionPolicy
    seed: int = 0
    memo_size: int = 100_000
    features: FeatureState = field(default_factory=lambda: FeatureState(spec=EPOCH_SPEC))
    decisions: DecisionState = field(default_factory=DecisionState)
    memo: OrderedDict[int, tuple[tuple[float, ...], float, Decision]] = field(default_factory=OrderedDict)
    unscored: OrderedDict[int, tuple[float, ...]] = field(default_factory=OrderedDict)
    """Features of payments whose scoring failed (a model not reachable): their retry reuses them."""
    labels: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def payment(self, tx: FraudTransaction, score: Callable[[tuple[float, ...]], float]) -> tuple[
        tuple[float, ...], float, Decision
    ]:
        """Features, score and decision of ``tx`` (the remembered ones for a payment seen before).
        :class:`InvalidTransactions` for a payment older than the stream's clock (nothing changes then)."""
        with self._lock:
            seen = self.memo.get(tx.tx_id)
            if seen is not None:
                return seen
            row = self.unscored.pop(tx.tx_id, None)
            if row is None:
                row = update(self.features, Payment(tx.tx_id, tx.customer_id, tx.terminal_id, tx.time, tx.amount))
            try:
                value = float(score(row))
            except Exception:
                # The payment is in the state already: a retry scores these features instead of adding it again.
                self.unscored[tx.tx_id] = row
                while len(self.unscored) > 1000:
                    self.unscored.popitem(last=False)
                raise
            self.decisions, decision = decide(
                self.policy, self.decisions, card=tx.customer_id, day=tx.time // SECONDS_PER_DAY, score=value,
                u=uniform(self.seed, tx.tx_id),
            )  # fmt: skip
            self.memo[tx.tx_id] = (row, value, decision)
            while len(self.memo) > self.memo_size:
                self.memo.popitem(last=False)
            return row, value, decision

    def label(self, label: FraudLabel) -> None:
        with self._lock:
            observe_label(
                self.features, Outcome(label.tx_id, label.terminal_id, label.tx_time, label.observed_at, label.is_fraud)
            )
            self.labels += 1


def predict_one(predictor: Any, row: Sequence[float]) -> float:
    """The fraud score of one feature row from a predictor: P(fraud) from a one-column or two-column output."""
    out = np.asarray(predictor.predict(np.asarray([row], dtype=np.float64)), dtype=np.float64)
    if out.ndim == 2 and out.shape[1] >= 2:
        return float(out[0, -1])
    return float(out.reshape(-1)[0])


def snapshot_spec() -> Any:
    from kawa.monitor.records import SnapshotSpec

    return SnapshotSpec.of(numeric=(*FEATURES, "action_propensity", "investigated"))


@dataclass(frozen=True)
class Pipeline:
    """The app and the streaming state its function keeps (for counters and tests)."""

    app: App
    state: StreamScorer


def build_app(settings: FraudSettings | None = None, *, scorer: Scorer | None = None, name: str = "fraud") -> App:
    """The app of :func:`build_pipeline`."""
    return build_pipeline(settings, scorer=scorer, name=name).app


def build_pipeline(
    settings: FraudSettings | None = None, *, scorer: Scorer | None = None, name: str = "fraud"
) -> Pipeline:
    """The app with ``settings``. Scores with ``settings.model_ref`` when set (``ctx.model``, with the
    experiment and the card as its unit when ``settings.experiment`` is set), else with ``scorer`` (default:
    :func:`fit_baseline`, fit on first use)."""
    s = settings or FraudSettings()
    app = App(name, config={"fraud": s.model_dump(mode="json", exclude={"card_key"})})
    state = StreamScorer(s.policy(), seed=s.seed, memo_size=s.memo_size)
    snapshot = snapshot_spec()
    local: list[LocalModel] = [LocalModel(scorer)] if scorer is not None else []
    fit_lock = threading.Lock()

    def local_model() -> LocalModel:
        with fit_lock:
            if not local:
                local.append(LocalModel(fit_baseline(s.baseline_customers, seed=s.seed)))
            return local[0]

    @app.function(
        name=FUNCTION,
        topic=s.transactions_topic,
        concurrency=1,
        min_scale=1,
        max_scale=1,
        replicas="thread",
        retries=2,
        backoff_s=0.05,
        reply_topic=s.decisions_topic,
        dead_letter_topic=s.dead_letter_topic,
        outputs=(s.decisions_topic, s.records_topic, s.blocked_topic, s.investigated_topic, s.passed_topic),
    )
    def score_transactions(event: CloudEvent, ctx: Context) -> CloudEvent | None:
        return handle(event, ctx, s, state, local_model, snapshot)

    return Pipeline(app, state)


def handle(
    event: CloudEvent,
    ctx: Context,
    s: FraudSettings,
    state: StreamScorer,
    local_model: Callable[[], LocalModel],
    snapshot: Any,
) -> CloudEvent | None:
    """One event of the transactions topic: a label feeds the features; a payment is decided."""
    started = time.perf_counter()
    kind = str(event.get_type())
    try:
        if kind == LABEL_TYPE:
            state.label(read_data(FraudLabel, event.get_data()))
            return None
        if kind != TRANSACTION_TYPE:
            raise PermanentError(f"event type {kind!r} is neither {TRANSACTION_TYPE!r} nor {LABEL_TYPE!r}")
        tx = read_data(FraudTransaction, event.get_data())
    except PermanentError:
        raise
    except InvalidTransactions as exc:  # a label older than the stream's clock
        raise PermanentError(f"late {kind} event {event.get_id()}: {exc}") from None
    except Exception as exc:  # a schema error names the field, never the value (card numbers)
        raise PermanentError(f"malformed {kind} event {event.get_id()}: {exc}") from None
    card = s.card(tx.customer_id)
    predictor: Any
    if s.model_ref is not None:
        ref = s.model_ref
        predictor = ctx.model(ref, experiment=s.experiment, unit=card) if s.experiment else ctx.model(ref)
    else:
        predictor = local_model()
    try:
        row, score, decision = state.payment(tx, lambda r: predict_one(predictor, r))
    except InvalidTransactions as exc:
        raise PermanentError(f"late payment {tx.tx_id}: {exc}") from None
    inputs = dict(zip(FEATURES, row, strict=True))
    inputs["action_propensity"] = decision.propensity
    inputs["investigated"] = float(decision.investigate)
    ctx.decide(
        card, model=cast("Predictor", predictor), score=score, action=decision.action, features=inputs,
        snapshot=snapshot, topic=s.records_topic, decided_at=float(tx.time),  # event time: outcomes mature in it
    )  # fmt: skip
    out = FraudDecision(
        event=EventRef.of(event), tx_id=tx.tx_id, card=card, terminal=tx.terminal_id, amount=tx.amount,
        score=score, action=decision.action, investigate=decision.investigate, propensity=decision.propensity,
        reason=decision.reason, model=str(predictor.name), model_version=int(predictor.version),
        latency_ms=round((time.perf_counter() - started) * 1000, 3), time=float(tx.time), decided_at=time.time(),
    )  # fmt: skip
    ctx.metrics.incr(f"action.{decision.action}")
    ctx.emit(s.action_topic(decision.action), ctx.new_event(DECISION_TYPE, out.data(), subject=card))
    return ctx.new_event(DECISION_TYPE, out.data(), subject=card, extensions={"partitionkey": card})


def __getattr__(name: str) -> Any:
    """``app``: the app with default settings (``kawa worker --app kawa.apps.fraud.pipeline:app``), built on
    first use so that importing this module fits nothing."""
    if name == "app":
        built = globals()["app"] = build_app(scorer=fit_baseline())
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
