"""Stored ⇒ notified: a put made while the log is down is published once the log is back, by nobody's hand.

The outbox is tested on its own (durable across reopening, relayed until the publisher succeeds) and with a
real Apache Kafka broker that is SIGKILLed before the put and restarted afterwards: the notification reaches
the topic from the running process, and from a store opened on the next start.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from kawa.config import KafkaClientConfig, KawaConfig, LogConfig, StoreConfig, StoreNotifyConfig
from kawa.errors import NotificationPending
from kawa.events import from_record
from kawa.log import open_log
from kawa.log.base import EventLog
from kawa.store import open_store
from kawa.store.outbox import Outbox, OutboxRelay, Pending
from kawa.store.rules import NotificationRule
from tests.fixtures.kafka import RestartableKafka


def wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        time.sleep(0.05)


def test_the_outbox_keeps_records_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.add("t", b"k", b"v1", [("ce_id", b"1")])
    outbox.add("t", None, None, [])
    outbox.close()
    again = Outbox(path)
    pending = again.oldest()
    assert [(p.topic, p.key, p.value, p.headers) for p in pending] == [
        ("t", b"k", b"v1", (("ce_id", b"1"),)),
        ("t", None, None, ()),
    ]
    again.remove([pending[0].id])
    assert again.count() == 1
    assert Outbox(tmp_path / "never-written.sqlite").count() == 0


def test_the_relay_retries_until_the_log_takes_every_record(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    for i in range(5):
        outbox.add("t", None, str(i).encode(), [])
    published: list[bytes | None] = []
    refusals = [3]
    lock = threading.Lock()

    def publish(pending: Pending) -> None:
        with lock:
            if refusals[0]:
                refusals[0] -= 1
                raise ConnectionError("the log is down")
            published.append(pending.value)

    relay = OutboxRelay(outbox, publish, idle_check_s=0.05)
    relay.kick()
    wait_for(lambda: outbox.count() == 0, timeout=60)
    relay.stop()
    assert published == [b"0", b"1", b"2", b"3", b"4"]  # in order, each once


def _topic_events(log: EventLog, topic: str, expect: int, timeout: float = 120) -> list[str]:
    consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic])
    subjects: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(set(subjects)) < expect:
            assert time.monotonic() < deadline, f"{len(set(subjects))} of {expect} notifications on {topic}"
            subjects += [str(from_record(r).get_attributes().get("subject")) for r in consumer.poll(0.2)]
    finally:
        consumer.close()
    return subjects


@pytest.mark.kafka
@pytest.mark.timeout(400)
def test_a_put_while_kafka_is_down_is_notified_when_it_is_back(
    restartable_kafka: RestartableKafka, tmp_path: Path
) -> None:
    config = KawaConfig(
        log=LogConfig(kafka=KafkaClientConfig(extra={"message.timeout.ms": "3000"})),
        store=StoreConfig(notify=StoreNotifyConfig(publish_timeout_s=3.0)),  # a put waits 3 s, then the outbox
    )
    log = open_log(f"kafka://{restartable_kafka.bootstrap}", config)
    topic = f"outbox-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "store"
    store = open_store(f"file:{root}", config, log=log)
    store.create_bucket("scans")
    store.add_notification(NotificationRule("scans", topic))
    store.put("scans", "before.txt", b"up")
    restartable_kafka.kill()
    with pytest.raises(NotificationPending, match="outbox") as caught:
        store.put("scans", "during.txt", b"down")
    assert caught.value.info is not None and caught.value.info.key == "during.txt"
    with store.get("scans", "during.txt") as reader:
        assert reader.read() == b"down"  # stored, whatever the log does
    restartable_kafka.start()
    # The running process relays it: nobody calls anything.
    assert set(_topic_events(log, topic, 2)) == {"before.txt", "during.txt"}
    notifier = store.notifier  # type: ignore[attr-defined]
    wait_for(lambda: notifier.outbox.count() == 0, timeout=60)

    # A put while the broker is down, then the process ends before the broker is back: the next start
    # publishes it.
    restartable_kafka.kill()
    with pytest.raises(NotificationPending):
        store.put("scans", "offline.txt", b"later")
    store.close()
    restartable_kafka.start()
    reopened = open_store(f"file:{root}", config, log=log)
    try:
        assert "offline.txt" in set(_topic_events(log, topic, 3))
    finally:
        reopened.close()
        log.close()
