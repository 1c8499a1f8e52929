"""The portal on Apache Kafka (the distributed shape): topics with sizes, raw records, the results tail and
re-driving a dead letter — everything the portal reads from the log goes through the same contract."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.events import new_event, to_kafka
from kawa.log.base import TopicSpec
from kawa.platform import Platform
from tests.portal.conftest import bearer, make_config

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


@pytest.fixture
def kafka_portal(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Any, Any, str, str]]:
    from fastapi.testclient import TestClient

    from kawa.portal.app import create_app
    from kawa.portal.runtime import Portal

    config = make_config(tmp_path / ".kawa").model_copy(
        update={"log": make_config(tmp_path / ".kawa").log.model_copy(update={"uri": f"kafka://{kafka_bootstrap}"})}
    )
    platform = Platform(config)
    portal = Portal(platform)
    portal.users.add_user("ann", "admin", "first-password")
    token = portal.users.create_token("ann")[1]
    prefix = f"portal-{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(portal)) as client:
        yield client, platform, token, prefix
    portal.stop()
    platform.stop()


def test_topics_records_and_redrive_on_kafka(kafka_portal: tuple[Any, Any, str, str]) -> None:
    client, platform, token, prefix = kafka_portal
    source, dlq = f"{prefix}.orders", f"{prefix}.orders.dlq"
    platform.log.create_topic(TopicSpec(source, partitions=3))
    platform.log.create_topic(TopicSpec(dlq))
    producer = platform.log.producer()
    for i in range(9):
        key, value, headers = to_kafka(new_event("shop.order", "/kafka-test", {"n": i}))
        producer.produce(source, value, key=f"k{i}".encode(), headers=headers)
    key, value, headers = to_kafka(new_event("shop.order", "/kafka-test", {"n": 99}))
    producer.produce(dlq, value, key=key, headers=[*headers, ("kawa-error-type", b"ValueError"),
                                                   ("kawa-error-message", b"bad order")])
    producer.flush()
    producer.close()

    topic = client.get(f"/api/topics/{source}", headers=bearer(token)).json()
    assert topic["written"] == 9 and len(topic["partitions"]) == 3
    records = client.get(f"/api/topics/{source}/records?limit=20", headers=bearer(token)).json()
    assert sorted(r["key"] for r in records) == [f"k{i}" for i in range(9)]
    (letter,) = client.get(f"/api/deadletters/{dlq}/records", headers=bearer(token)).json()
    assert letter["error_message"] == "bad order" and letter["data"] == {"n": 99}
    moved = client.post(f"/api/deadletters/{dlq}/redrive", json={"partition": 0, "offset": letter["offset"]},
                        headers=bearer(token))
    assert moved.status_code == 200 and moved.json()["topic"] == source
    deadline = time.monotonic() + 30
    while client.get(f"/api/topics/{source}", headers=bearer(token)).json()["written"] != 10:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for name in (source, dlq):
        platform.log.delete_topic(name)
