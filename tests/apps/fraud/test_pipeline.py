"""The streaming function, one event at a time through ``kawa.testing.invoke``: features, score, decision,
the decision record, pseudonymised cards, dead letters, redeliveries; the stream's features against numpy's."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from kawa.apps.fraud.backfill import numpy_features
from kawa.apps.fraud.events import DECISION_TYPE, LABEL_TYPE, TRANSACTION_TYPE
from kawa.apps.fraud.features import FeatureSpec
from kawa.apps.fraud.labels import chargebacks
from kawa.apps.fraud.outcomes import due_outcomes
from kawa.apps.fraud.pipeline import FEATURES, FUNCTION, StreamScorer, build_pipeline, uniform
from kawa.apps.fraud.replay import epoch_of
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.fraud.sim import Simulation
from kawa.testing import cloud_event, invoke

DAY = 86_400
T0 = epoch_of(FeatureSpec().start_date)


def payment(tx_id: int, customer: int = 7, terminal: int = 3, t: int = T0 + 3600, amount: float = 42.0) -> Any:
    data = {"tx_id": tx_id, "customer_id": customer, "terminal_id": terminal, "time": t, "amount": amount}
    return cloud_event(TRANSACTION_TYPE, data, source="kawa://fraud/test", id=f"tx-{tx_id}")


def amount_scorer(features: Any) -> float:
    return min(1.0, float(features[0]) / 300.0)


def test_a_payment_becomes_one_decision_and_one_decision_record_with_a_pseudonymous_card() -> None:
    s = FraudSettings()
    pipe = build_pipeline(s, scorer=amount_scorer)
    handler = pipe.app.get(FUNCTION)
    out = invoke(handler, payment(1, customer=4242, amount=291.0))
    assert out.outcome == "ok", out.reason
    [decision] = out.replies
    data = decision.get_data()
    assert decision.get_type() == DECISION_TYPE
    assert data["card"] == s.card(4242) and "4242" not in json.dumps(data)
    assert data["score"] == 291.0 / 300.0 and data["action"] == "block" and data["propensity"] == 1.0
    assert data["event"] == {"source": "kawa://fraud/test", "id": "tx-1"} and data["latency_ms"] >= 0
    assert [e.get_data()["tx_id"] for e in out.emitted_to(s.blocked_topic)] == [1]
    [record] = out.emitted_to(s.records_topic)
    rec = record.get_data()
    assert rec["entity"] == s.card(4242) and rec["model"] == "fraud-baseline" and rec["action"] == "block"
    assert set(rec["features"]) == {*FEATURES, "action_propensity", "investigated"}
    assert rec["features"]["amount"] == 291.0 and rec["features"]["action_propensity"] == 1.0
    assert s.card(4242) != FraudSettings(card_key="another").card(4242)  # type: ignore[arg-type]


def test_the_default_app_scores_with_the_handbook_tree_fit_on_a_simulation() -> None:
    import kawa.apps.fraud.pipeline as pipeline

    out = invoke(pipeline.app.get(FUNCTION), payment(1, amount=500.0))  # `kawa worker --app ...pipeline:app`
    assert out.outcome == "ok", out.reason
    data = out.replies[0].get_data()
    assert data["model"] == "fraud-baseline" and data["score"] > 0.5  # amount > 220 is fraud (scenario 1)


def test_a_registered_model_scores_through_ctx_model() -> None:
    s = FraudSettings(model_name="fraud", first_threshold=0.5)
    handler = build_pipeline(s).app.get(FUNCTION)
    out = invoke(handler, payment(1), models={"fraud@champion": lambda x: np.array([[0.3, 0.7]] * len(x))})
    assert out.outcome == "ok", out.reason
    data = out.replies[0].get_data()
    assert data["score"] == 0.7 and data["action"] == "investigate" and data["model"] == "fraud"
    assert len(out.predictions) == 1 and np.asarray(out.predictions[0].inputs).shape == (1, len(FEATURES))


def test_malformed_unknown_and_late_payments_are_dead_lettered_with_the_reason() -> None:
    handler = build_pipeline(FraudSettings(), scorer=amount_scorer).app.get(FUNCTION)
    assert invoke(handler, payment(1, t=T0 + 10 * DAY)).outcome == "ok"
    bad = cloud_event(TRANSACTION_TYPE, {"tx_id": 2, "customer_id": 1, "terminal_id": 1, "time": T0, "amount": "x"})
    out = invoke(handler, bad)
    assert out.outcome == "dead-lettered" and "amount" in (out.reason or ""), out.reason
    missing = invoke(handler, cloud_event(TRANSACTION_TYPE, {"tx_id": 3}))
    assert missing.outcome == "dead-lettered" and "customer_id" in (missing.reason or "")
    assert invoke(handler, cloud_event(TRANSACTION_TYPE, b"not json")).outcome == "dead-lettered"
    other = invoke(handler, cloud_event("dev.example.other", {"a": 1}))
    assert other.outcome == "dead-lettered" and "neither" in (other.reason or "")
    late = invoke(handler, payment(4, t=T0 + 9 * DAY))
    assert late.outcome == "dead-lettered" and "late payment 4" in (late.reason or ""), late.reason


def test_a_redelivered_payment_gets_its_first_decision_and_counts_once() -> None:
    pipe = build_pipeline(FraudSettings(), scorer=amount_scorer)
    handler = pipe.app.get(FUNCTION)
    first = invoke(handler, payment(1)).replies[0].get_data()
    again = invoke(handler, payment(1)).replies[0].get_data()
    keys = ("score", "action", "propensity", "reason")
    assert [again[k] for k in keys] == [first[k] for k in keys]
    third = invoke(handler, payment(2, t=T0 + 3700))
    assert third.outcome == "ok"
    [record] = third.emitted_to("decisions")
    assert record.get_data()["features"]["customer_nb_tx_1d"] == 2.0  # not 3: the redelivery did not count


def test_a_payment_retried_after_its_scoring_failed_counts_once() -> None:
    calls: list[float] = []

    def flaky(features: Any) -> float:
        calls.append(features[3])
        if len(calls) == 1:
            raise ConnectionError("model server unreachable")
        return 0.1

    handler = build_pipeline(FraudSettings(), scorer=flaky).app.get(FUNCTION)
    assert invoke(handler, payment(1)).outcome == "failed"  # the host would retry it
    assert invoke(handler, payment(1)).outcome == "ok"
    assert invoke(handler, payment(2, t=T0 + 3700)).outcome == "ok"
    assert calls == [1.0, 1.0, 2.0]  # customer_nb_tx_1d: the retry did not add the payment again


def test_labels_on_the_stream_feed_the_terminal_risk() -> None:
    handler = build_pipeline(FraudSettings(), scorer=amount_scorer).app.get(FUNCTION)
    assert invoke(handler, payment(1, terminal=5, t=T0)).outcome == "ok"
    label = {"tx_id": 1, "terminal_id": 5, "tx_time": T0, "observed_at": T0 + 2 * DAY, "is_fraud": True}
    assert invoke(handler, cloud_event(LABEL_TYPE, label)).outcome == "ok"
    out = invoke(handler, payment(2, customer=8, terminal=5, t=T0 + 7 * DAY + 60))
    features = out.emitted_to("decisions")[0].get_data()["features"]
    assert features["terminal_nb_tx_1d"] == 1.0 and features["terminal_risk_1d"] == 1.0
    stale = invoke(handler, cloud_event(LABEL_TYPE, {**label, "tx_id": 9, "observed_at": T0 + DAY}))
    assert stale.outcome == "dead-lettered" and "late dev.kawa.fraud.label" in (stale.reason or ""), stale.reason


def test_the_stream_computes_numpy_s_features_and_keeps_the_budget(small_sim: Simulation) -> None:
    """Payments and chargebacks replayed through the stream's state on epoch seconds equal the numpy backfill
    (an independent, vectorised implementation) on the simulator's clock; the budget holds every day."""
    tx = small_sim.tx.take(np.flatnonzero(small_sim.tx.day < 20))
    labels = chargebacks(tx, median_days=3, seed=1)
    expected = numpy_features(tx, labels)
    s = FraudSettings(capacity=5, explore=0.01, explore_capacity=2, first_threshold=0.3)
    state = StreamScorer(s.policy(), seed=s.seed)
    epoch0 = epoch_of(tx.start_date)
    dues = due_outcomes(labels, epoch0=epoch0, card=s.card)
    rows: dict[int, tuple[float, ...]] = {}
    actions: Counter[tuple[int, str]] = Counter()
    explored: list[float] = []
    j = 0
    from kawa.apps.fraud.events import FraudTransaction

    for tx_id, c, m, t, a in zip(tx.tx_id.tolist(), tx.customer_id.tolist(), tx.terminal_id.tolist(),
                                 tx.time.tolist(), tx.amount.tolist(), strict=True):
        while j < len(dues) and dues[j].observed_at <= epoch0 + t:
            state.label(dues[j].label)
            j += 1
        row, _score, decision = state.payment(
            FraudTransaction(tx_id=tx_id, customer_id=c, terminal_id=m, time=epoch0 + t, amount=a), amount_scorer
        )
        rows[tx_id] = row
        actions[(t // DAY, "case" if decision.investigate else decision.action)] += 1
        if decision.reason == "random exploration":
            explored.append(decision.propensity)
    got = np.array([rows[i] for i in tx.tx_id.tolist()])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    for day in range(20):
        assert actions[(day, "case")] <= s.capacity + s.explore_capacity
    assert explored and set(explored) == {s.explore}
    assert 0 <= uniform(0, 1) < 1 and uniform(0, 1) == uniform(0, 1) != uniform(1, 1)


def test_in_an_experiment_each_card_gets_its_arm_and_the_record_says_so() -> None:
    from kawa.evaluation.assignment import assign
    from kawa.evaluation.spec import Arm, ExperimentSpec

    spec = ExperimentSpec(
        name="fraud-canary", model="fraud", arms=(Arm("champion", 0.5, model="fraud@champion"),
                                                  Arm("challenger", 0.5, model="fraud@challenger")),
        unit="card", salt="s1", primary_metric="cp100", maturity_window_s=14 * DAY, metric_kind="proportion",
        horizon=10_000,
    )  # fmt: skip
    s = FraudSettings(model_name="fraud", experiment="fraud-canary")
    handler = build_pipeline(s).app.get(FUNCTION)
    models = {"fraud@champion": lambda x: [0.1] * len(x), "fraud@challenger": lambda x: [0.2] * len(x)}
    seen: set[str] = set()
    for n in range(1, 41):
        out = invoke(handler, payment(n, customer=n, t=T0 + n), models=models, experiments=[spec])
        assert out.outcome == "ok", out.reason
        arm = assign(s.card(n), "s1", [("champion", 0.5), ("challenger", 0.5)]).arm
        assert out.replies[0].get_data()["score"] == (0.1 if arm == "champion" else 0.2)
        record = out.emitted_to(s.records_topic)[0].get_data()
        assert record["entity"] == s.card(n) and record["arm"] == arm and record["propensity"] == 0.5
        assert record["experiment"] == "fraud-canary"
        seen.add(arm)
    assert seen == {"champion", "challenger"}
