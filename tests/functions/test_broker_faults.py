"""A real Apache Kafka broker crashes (SIGKILL) under a running function host and comes back on its data.

Records the log did not acknowledge while it was down (replies, emitted events, dead letters) are produced
again by the producer — the same bytes, so the same CloudEvent ids — and no input is marked done or committed
before they are acknowledged. Afterwards every input has exactly its effects on the topics: nothing lost, and
duplicates only with the same id. ``message.timeout.ms`` is short here, so records really time out and take
the produce-again path while the broker is down.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from kawa.config import KafkaClientConfig, KawaConfig, LogConfig
from kawa.events import CloudEvent, from_record
from kawa.functions import App, Context, FunctionHost, PermanentError
from kawa.functions.context import derived_id
from kawa.log import open_log
from kawa.log.base import EventLog, TopicSpec
from kawa.log.kafka.producer import KafkaProducer
from tests.fixtures.kafka import RestartableKafka
from tests.functions.conftest import FAST, committed, events, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]

N = 120
DEAD = {i for i in range(N) if i % 25 == 7}  # these fail for good and go to the dead-letter topic


def short_timeout_log(bootstrap: str) -> EventLog:
    config = KawaConfig(log=LogConfig(kafka=KafkaClientConfig(extra={"message.timeout.ms": "3000"})))
    return open_log(f"kafka://{bootstrap}", config)


def distinct_ids(log: EventLog, topic: str) -> Counter[str]:
    """How often each CloudEvent id stands on ``topic`` (read until the end)."""
    consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    ends = {p.partition: p.end_offset for p in log.lag(consumer.group, [topic])}
    seen: Counter[str] = Counter()
    positions: dict[int, int] = {}
    deadline = time.monotonic() + 60
    try:
        while any(positions.get(p, 0) < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for record in consumer.poll(0.2, max_records=500):
                positions[record.partition] = record.offset + 1
                seen[from_record(record).get_id()] += 1
    finally:
        consumer.close()
    return seen


def test_a_broker_crash_loses_no_reply_emit_or_dead_letter(restartable_kafka: RestartableKafka) -> None:
    log = short_timeout_log(restartable_kafka.bootstrap)
    tag = uuid.uuid4().hex[:8]
    topic, out, side = f"in-{tag}", f"out-{tag}", f"side-{tag}"
    for name in (topic, out, side, f"{topic}.dlq"):
        log.create_topic(TopicSpec(name, partitions=2))
    app = App("faults")
    gate = threading.Event()

    @app.function(topic=topic, reply_topic=out, retries=0, concurrency=N, max_scale=1)  # all at once
    def handle(event: CloudEvent, ctx: Context) -> CloudEvent:
        n = event.get_data()["n"]  # type: ignore[index]
        if n >= 20:
            gate.wait(120)  # the first 20 go through before the crash, the rest meet a dead broker
        if n in DEAD:
            raise PermanentError(f"event {n} can never succeed")
        ctx.emit(side, ctx.new_event("faults.side", {"n": n}))
        return ctx.new_event("faults.reply", {"n": n})

    batch = events(N, source=f"/faults/{tag}")
    produce(log, topic, batch)
    group = app.get("handle").group
    with FunctionHost(app, log=log, options=FAST) as host:
        wait_for(lambda: host.metrics()["faults.handle"].succeeded >= 19, timeout=120)
        restartable_kafka.kill()
        gate.set()
        producer = host.runner("handle").runtime.producer
        assert isinstance(producer, KafkaProducer)
        # Records time out against the dead broker and are queued again, not dropped.
        wait_for(lambda: producer.reproduced > 0, timeout=120)
        assert sum(v or 0 for v in committed_or_empty(log, group, topic).values()) < N
        restartable_kafka.start()
        wait_for(lambda: sum(v or 0 for v in committed(log, group, topic).values()) == N, timeout=240)
        stats = host.metrics()["faults.handle"]
    assert stats.succeeded == N - len(DEAD) and stats.dead_lettered == len(DEAD)
    spec = app.get("handle")
    ok = [e for e in batch if e.get_data()["n"] not in DEAD]  # type: ignore[index]
    replies = distinct_ids(log, out)
    assert set(replies) == {derived_id(spec, e, "reply:0") for e in ok}, "a reply was lost"
    assert set(distinct_ids(log, side)) == {derived_id(spec, e, "new:1") for e in ok}, "an emitted event was lost"
    dead = distinct_ids(log, f"{topic}.dlq")
    assert set(dead) == {e.get_id() for e in batch if e.get_data()["n"] in DEAD}, "a dead letter was lost"  # type: ignore[index]
    log.close()


def committed_or_empty(log: EventLog, group: str, topic: str) -> dict[int, int | None]:
    """The group's commits, or nothing while the broker cannot answer."""
    try:
        return committed(log, group, topic)
    except Exception:
        return {}


def test_the_prediction_log_loses_nothing_across_a_broker_crash(restartable_kafka: RestartableKafka) -> None:
    import numpy as np

    from kawa.ml.prediction_log import PredictionLogger

    log = short_timeout_log(restartable_kafka.bootstrap)
    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    logger = PredictionLogger(log, topic)
    x, y = np.zeros((1, 4), np.float32), np.array([0.5])
    for i in range(50):
        logger.record("m", 1, x, y, 0.001, event_id=f"before-{i}")
    logger.flush(60)
    restartable_kafka.kill()
    for i in range(50):
        logger.record("m", 1, x, y, 0.001, event_id=f"during-{i}")
    producer = logger._producer
    assert isinstance(producer, KafkaProducer)
    wait_for(lambda: producer.reproduced > 0, timeout=120)  # they timed out against the dead broker
    restartable_kafka.start()
    deadline = time.monotonic() + 180
    while True:
        try:
            logger.flush(30)
            break
        except Exception:
            assert time.monotonic() < deadline, "the prediction log never caught up after the broker came back"
    logger.close()
    consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    served: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    try:
        while len(served) < 100:
            assert time.monotonic() < deadline, f"only {len(served)} of 100 predictions on the log"
            for record in consumer.poll(0.2):
                served[from_record(record).get_data()["event_id"]] += 1  # type: ignore[index]
    finally:
        consumer.close()
    assert set(served) == {f"before-{i}" for i in range(50)} | {f"during-{i}" for i in range(50)}
    log.close()
