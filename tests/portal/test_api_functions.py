"""Functions, topics and dead letters through the API, with a real function host on the embedded log:
numbers agree with the host's own metrics; a dead letter carries its reason and re-drives to its source
topic as a new event that the function then handles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kawa.events import CloudEvent, new_event, to_kafka
from kawa.log.base import TopicSpec
from kawa.portal.permissions import Role
from tests.portal.conftest import bearer

TOPIC = "orders"


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class Handled:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.fail = True
        self.lock = threading.Lock()


@pytest.fixture
def handled() -> Handled:
    return Handled()


@pytest.fixture
def host(platform: Any, handled: Handled) -> Iterator[Any]:
    from kawa.functions.app import App
    from kawa.functions.host import FunctionHost
    from kawa.functions.invoke import PermanentError

    app = App("shop")

    @app.function(topic=TOPIC, reply_topic="orders.done", min_scale=1, max_scale=2, retries=0)
    def check(event: CloudEvent, ctx: Any) -> CloudEvent | None:
        data = event.get_data()
        assert isinstance(data, dict)
        if data.get("poison") and handled.fail:
            raise PermanentError("order has no customer; fix the producer")
        with handled.lock:
            handled.ids.append(str(event.get_id()))
        return ctx.new_event("shop.checked", {"n": data["n"]})

    platform.log.create_topic(TopicSpec(TOPIC, partitions=2), exist_ok=True)
    host = FunctionHost(app, log=platform.log, config=platform.config)
    host.start()
    platform.functions_host = host
    yield host
    platform.functions_host = None
    host.stop()


def produce(platform: Any, n: int, poison: set[int] | None = None) -> None:
    producer = platform.log.producer()
    for i in range(n):
        key, value, headers = to_kafka(new_event("shop.order", "/tests", {"n": i, "poison": i in (poison or set())}))
        producer.produce(TOPIC, value, key=key, headers=headers)
    producer.close()


def test_functions_section_is_not_configured_without_a_host(client: Any, admin: dict[str, str]) -> None:
    body = client.get("/api/functions", headers=admin).json()
    assert body["configured"] is False and "kawa up --app" in body["reason"]
    assert client.get("/api/functions/anything", headers=admin).status_code == 409


def test_function_numbers_agree_with_the_host(
    client: Any, admin: dict[str, str], platform: Any, host: Any, handled: Handled, portal: Any
) -> None:
    produce(platform, 12, poison={3})
    wait_for(lambda: host.metrics()["shop.check"].succeeded == 11 and host.metrics()["shop.check"].dead_lettered == 1)
    portal.sampler.tick()
    body = client.get("/api/functions", headers=admin).json()
    assert body["configured"] is True
    (fn,) = body["items"]
    stats = host.metrics()["shop.check"]
    assert fn["name"] == "shop.check" and fn["topic"] == TOPIC and fn["reply_topic"] == "orders.done"
    assert fn["succeeded"] == stats.succeeded == 11
    assert fn["dead_lettered"] == stats.dead_lettered == 1
    assert fn["dead_letters_on_topic"] == 1 and fn["dead_letter_topic"] == "orders.dlq"
    assert fn["replicas"] == stats.replicas >= 1 and fn["max_scale"] == 2
    assert fn["latency_p99_ms"] is not None and fn["latency_p50_ms"] <= fn["latency_p99_ms"]
    wait_for(lambda: client.get("/api/functions/check", headers=admin).json()["lag"] == 0)
    history = client.get("/api/functions/shop.check/history", headers=admin).json()
    assert history and history[-1]["replicas"] >= 1
    topics = {t["name"]: t for t in client.get("/api/topics", headers=admin).json()["items"]}
    assert topics[TOPIC]["written"] == 12 and topics["orders.done"]["written"] == 11
    assert topics[TOPIC]["consumers"] == [{"group": stats.group, "lag": 0, "owner": "shop.check"}]
    graph = client.get("/api/overview", headers=admin).json()
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert {("topic:orders", "function:shop.check"), ("function:shop.check", "topic:orders.done"),
            ("function:shop.check", "topic:orders.dlq")} <= edges


def test_topic_rates_follow_writes(client: Any, admin: dict[str, str], platform: Any, portal: Any) -> None:
    platform.log.create_topic(TopicSpec("metered"))
    producer = platform.log.producer()
    portal.sampler.tick()
    for _ in range(50):
        producer.produce("metered", b"x")
    producer.flush()
    time.sleep(0.5)
    portal.sampler.tick()
    topic = client.get("/api/topics/metered", headers=admin).json()
    assert topic["written"] == 50 and topic["records"] == 50
    assert 20 < topic["rate_per_s"] <= 50 / 0.5 + 1e-6
    assert client.get("/api/topics/nope", headers=admin).status_code == 404
    records = client.get("/api/topics/metered/records?limit=3", headers=admin).json()
    assert [r["offset"] for r in records] == [49, 48, 47] and records[0]["value"] == "x"


def test_dead_letters_show_the_reason_and_redrive_to_the_source(
    client: Any, admin: dict[str, str], platform: Any, host: Any, handled: Handled, tokens: dict[Role, str]
) -> None:
    produce(platform, 4, poison={2})
    wait_for(lambda: host.metrics()["shop.check"].dead_lettered == 1 and len(handled.ids) == 3)
    (dlq,) = client.get("/api/deadletters", headers=admin).json()["items"]
    assert dlq == {"topic": "orders.dlq", "source_topic": TOPIC, "records": 1, "owners": ["shop.check"]}
    (letter,) = client.get("/api/deadletters/orders.dlq/records", headers=admin).json()
    assert letter["error_type"] == "invalid-input"  # the reason code of the one dead-letter schema
    assert letter["error_message"] == "order has no customer; fix the producer"
    assert letter["reason"]["kind"] == "function" and letter["reason"]["source_topic"] == TOPIC
    assert letter["function"] == "shop.check" and letter["attempts"] == 1
    assert letter["data"] == {"n": 2, "poison": True}
    # The producer is fixed; re-drive the dead letter: it runs again as a new event and succeeds.
    handled.fail = False
    moved = client.post("/api/deadletters/orders.dlq/redrive",
                        json={"partition": letter["partition"], "offset": letter["offset"]}, headers=admin)
    assert moved.status_code == 200 and moved.json()["topic"] == TOPIC
    wait_for(lambda: len(handled.ids) == 4)
    assert handled.ids[-1] != letter["event_id"]  # a new id: the dead-lettered id is remembered as handled
    redriven = client.get(f"/api/topics/{TOPIC}/records?partition={moved.json()['partition']}"
                          f"&offset={moved.json()['offset']}&limit=1", headers=admin).json()[0]
    assert redriven["headers"]["ce_kawaredriveof"] == letter["event_id"]
    assert not [h for h in redriven["headers"] if "kawa-dlq" in h or "kawadlq" in h]
    # Not a dead-letter topic / no such record.
    assert client.post(f"/api/deadletters/{TOPIC}/redrive", json={"partition": 0, "offset": 0},
                       headers=admin).status_code == 400
    assert client.post("/api/deadletters/orders.dlq/redrive", json={"partition": 0, "offset": 99},
                       headers=admin).status_code == 404
    # Viewers see neither the topics nor the records.
    assert client.get("/api/deadletters", headers=bearer(tokens[Role.VIEWER])).status_code == 403


def test_routes_register_list_and_delete(client: Any, admin: dict[str, str]) -> None:
    yaml = "routes:\n  - id: copy-orders\n    from: topic:orders?group=copy\n    to: topic:orders-copy\n"
    assert client.post("/api/routes", json={"yaml": yaml}, headers=admin).json() == [
        {"id": "copy-orders", "outcome": "created"}
    ]
    assert client.post("/api/routes", json={"yaml": yaml}, headers=admin).json()[0]["outcome"] == "unchanged"
    (route,) = client.get("/api/routes", headers=admin).json()["items"]
    assert route["id"] == "copy-orders" and route["source"] == "topic:orders?group=copy"
    assert route["target"] == "topic:orders-copy" and route["state"] == "registered"
    bad = client.post("/api/routes", json={"yaml": "routes:\n  - id: x\n    from: nowhere:at-all\n"}, headers=admin)
    assert bad.status_code == 422 and "nowhere" in bad.json()["detail"]
    assert client.delete("/api/routes/copy-orders", headers=admin).status_code == 204
    assert client.get("/api/routes/copy-orders", headers=admin).status_code == 404
    assert client.get("/api/routes", headers=admin).json()["items"] == []
