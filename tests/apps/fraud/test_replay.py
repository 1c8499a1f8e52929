"""The replay: its pacing schedule, what it publishes and in which order, outcomes by EventRef or entity, and
case results that mirror labels.investigate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.apps.fraud.events import DECISION_TYPE, LABEL_TYPE, TRANSACTION_TYPE
from kawa.apps.fraud.labels import chargebacks, investigate
from kawa.apps.fraud.outcomes import due_outcomes, investigation_labels, payment_ref
from kawa.apps.fraud.plugin import topics
from kawa.apps.fraud.replay import Replay, epoch_of, pacing
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.fraud.sim import Simulation
from kawa.config import load_config
from kawa.events.cloudevents import from_record, new_event, to_kafka
from kawa.log import TopicSpec, open_log
from kawa.log.base import EventLog, Record
from kawa.monitor.records import OutcomeEvent, decode

DAY = 86_400


class FakeClock:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        self.slept += s


def memory_log(tmp_path: Path) -> EventLog:
    log = open_log("memory:", config=load_config(None, env={}, home=str(tmp_path / ".kawa")))
    for decl in topics(FraudSettings()):
        log.create_topic(TopicSpec(decl.name, partitions=decl.partitions), exist_ok=True)
    return log


def read_all(log: EventLog, topic: str) -> list[Record]:
    consumer = log.consumer(f"read-{topic}", [topic], auto_offset_reset="earliest")
    out: list[Record] = []
    try:
        while batch := consumer.poll(timeout=0.2, max_records=10_000):
            out.extend(batch)
    finally:
        consumer.close()
    return out


def test_pacing_spreads_event_time_by_the_speed_factor() -> None:
    assert pacing([100, 100, 160, 460], 60).tolist() == [0.0, 0.0, 1.0, 6.0]
    assert pacing([5, 9], float("inf")).tolist() == [0.0, 0.0] and len(pacing([], 2.0)) == 0
    with pytest.raises(ValueError, match="speed"):
        pacing([1], 0)


def test_the_replay_publishes_payments_then_labels_when_due_in_event_time_order(
    small_sim: Simulation, tmp_path: Path
) -> None:
    tx = small_sim.tx.take(np.flatnonzero(small_sim.tx.day < 12))
    labels = chargebacks(tx, median_days=2, seed=0)
    log, s, clock = memory_log(tmp_path), FraudSettings(), FakeClock()
    replay = Replay(log, s, tx, labels, speed=DAY, investigations=False, corrupt=0.02, seed=1, clock=clock,
                    sleep=clock.sleep)  # fmt: skip
    stats = replay.run()
    span = (tx.time[-1] - tx.time[0]) / DAY
    assert stats.payments == len(tx) and span - 0.11 <= clock.slept <= span + 1e-6  # a day a wall second
    assert 0 < stats.corrupt < 0.05 * len(tx)
    records = read_all(log, s.transactions_topic)
    events = [from_record(r) for r in records]
    kinds = [str(e.get_type()) for e in events]
    assert kinds.count(TRANSACTION_TYPE) == len(tx) and kinds.count(LABEL_TYPE) == stats.labels
    epoch0 = epoch_of(tx.start_date)
    when = [int(e.get_data()["time"] if k == TRANSACTION_TYPE else e.get_data()["observed_at"])
            for e, k in zip(events, kinds, strict=True)]  # fmt: skip
    assert when == sorted(when)  # one event-time order: what the features need
    due = labels.observed_at + epoch0 <= int(epoch0 + tx.time[-1])
    assert stats.labels == stats.outcomes == int(due.sum()) > 0
    outcomes = [decode(r) for r in read_all(log, s.outcomes_topic)]
    assert all(isinstance(o, OutcomeEvent) for o in outcomes)
    first = outcomes[0]
    assert isinstance(first, OutcomeEvent) and first.ref == payment_ref(int(labels.tx_id[0])) and first.label == 1
    assert first.observed_at == epoch0 + int(labels.observed_at[0])


def test_outcomes_by_entity_name_the_pseudonymous_card_and_the_payment_time(small_sim: Simulation) -> None:
    tx = small_sim.tx.take(np.flatnonzero(small_sim.tx.day < 10))
    labels = chargebacks(tx, seed=2)
    s = FraudSettings()
    [due, *_] = due_outcomes(labels, epoch0=1000, card=s.card, target="entity")
    assert due.outcome.ref is None and due.outcome.entity == s.card(int(labels.customer_id[0]))
    assert due.outcome.at == 1000 + int(labels.tx_time[0]) and due.outcome.id == f"chargeback-{labels.tx_id[0]}"
    assert due.label.observed_at == 1000 + int(labels.observed_at[0]) and due.label.is_fraud


def test_case_results_label_what_labels_investigate_labels(small_sim: Simulation) -> None:
    """The same cases give the same labelled payments as the offline top-k investigation, observed 1-3 days
    after the day ends."""
    tx = small_sim.tx.take(np.flatnonzero(small_sim.tx.day < 15))
    scores = np.random.default_rng(0).random(len(tx))
    cases, offline = investigate(tx, scores, k=10, explore=2, seed=0)
    picked = list(zip(cases.customer_id[cases.investigated].tolist(), cases.day[cases.investigated].tolist(),
                      strict=True))  # fmt: skip
    online = investigation_labels(tx, picked, seed=5)
    assert sorted(online.tx_id.tolist()) == sorted(offline.tx_id.tolist())
    assert np.array_equal(np.sort(online.tx_id[online.is_fraud]), np.sort(offline.tx_id[offline.is_fraud]))
    after = online.observed_at - (online.tx_time // DAY + 1) * DAY
    assert after.min() >= DAY and after.max() <= 3 * DAY


def test_the_replay_schedules_the_results_of_the_cases_the_stream_opens(small_sim: Simulation, tmp_path: Path) -> None:
    tx = small_sim.tx.take(np.flatnonzero(small_sim.tx.day < 8))
    log, s = memory_log(tmp_path), FraudSettings()
    opened: dict[str, Any] = {"tx_id": int(tx.tx_id[0])}
    other: dict[str, Any] = {"tx_id": int(tx.tx_id[5]), "event": {"source": "kawa://fraud/replay/old", "id": "tx-5"}}
    for n, data in enumerate((opened, other)):  # the second is an earlier replay's case: not this one's
        key, value, headers = to_kafka(new_event(DECISION_TYPE, "kawa://test", data, id=f"d-{n}"))
        log.producer().send(s.investigated_topic, value, key=key, headers=headers)
    clock = FakeClock()
    stats = Replay(log, s, tx, None, speed=float("inf"), clock=clock, sleep=clock.sleep).run()
    assert stats.cases == 1 and stats.labels >= 1 and clock.slept == 0
    labelled = [json.loads(r.value or b"{}") for r in read_all(log, s.transactions_topic)
                if r.header("ce_type") == LABEL_TYPE.encode()]  # fmt: skip
    same_day = tx.time // DAY == tx.time[0] // DAY
    card = tx.customer_id == tx.customer_id[0]
    assert {lab["tx_id"] for lab in labelled} == set(tx.tx_id[same_day & card].tolist())
    assert all(lab["source"] == "investigation" for lab in labelled)


def test_kawa_replay_of_the_payments_file_feeds_the_function(small_sim: Simulation, tmp_path: Path) -> None:
    """The platform's own replay (``kawa replay FILE --type dev.kawa.fraud.transaction``) publishes payments
    the function decides, in event-time order."""
    from kawa.apps.fraud.pipeline import FUNCTION, build_pipeline
    from kawa.apps.fraud.replay import write_payments
    from kawa.routes.replay import publish_file
    from kawa.testing import invoke

    tx = small_sim.tx.take(np.arange(200))
    log, s = memory_log(tmp_path), FraudSettings()
    path = write_payments(tx, tmp_path / "payments.parquet")
    producer = log.producer()
    result = publish_file(path, producer, s.transactions_topic, time_column="time", event_type=TRANSACTION_TYPE)
    producer.flush()
    assert result.published == 200
    handler = build_pipeline(s, scorer=lambda f: 0.1).app.get(FUNCTION)
    outs = [invoke(handler, from_record(r)) for r in read_all(log, s.transactions_topic)]
    assert [o.outcome for o in outs] == ["ok"] * 200
    assert [o.replies[0].get_data()["tx_id"] for o in outs] == tx.tx_id.tolist()
    assert outs[0].replies[0].get_data()["time"] == epoch_of(tx.start_date) + int(tx.time[0])
