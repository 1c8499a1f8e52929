"""A function acts only on the buckets its trigger names, and on every record of a notification.

On the real broker (KAWA_TEST_KAFKA), Ceph-shaped notifications sent with a plain confluent-kafka Producer:
one naming the function's *output* bucket changes nothing there (bytes and etag unchanged, no result) and
is counted as ``skipped_foreign``, while a legit record after it is processed; a notification of two records
is handled as two events with their own ids (each deduplicated on its own when it comes again)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from kawa.config import load_config
from kawa.events import CloudEvent
from kawa.functions import App, Context, FunctionHost
from kawa.log import open_log
from kawa.log.base import TopicSpec
from kawa.store import open_store, parse_records
from tests.functions.ceph import ceph_record, send
from tests.functions.conftest import FAST, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

IN, OUT = "scans-in", "scans-processed"


def _app(results: list[tuple[str, str]], on_foreign: Any = "skip", dlq: str | None = None) -> App:
    app = App("scope")

    @app.function(bucket=IN, topic=TOPIC[0], retries=0, on_foreign=on_foreign, dead_letter_topic=dlq)
    def process(event: CloudEvent, ctx: Context) -> None:
        for record in parse_records(event):  # a handler that trusts what it is given, like the X-ray one
            with ctx.store.get(record.bucket, record.key) as reader:
                data = reader.read()
            ctx.store.put(OUT, record.key, data + b" (processed)")
            results.append((str(event.get_id()), record.key))

    return app


TOPIC = [""]


@pytest.fixture
def world(kafka_bootstrap: str, tmp_path: Path) -> Any:
    config = load_config(home=str(tmp_path / ".kawa"), store={"uri": str(tmp_path / "buckets")})
    log = open_log(f"kafka://{kafka_bootstrap}", config)
    TOPIC[0] = f"scope-{uuid.uuid4().hex[:8]}"
    log.create_topic(TopicSpec(TOPIC[0]))
    store = open_store(str(tmp_path / "buckets"), config, log=log)
    for bucket in (IN, OUT):
        store.create_bucket(bucket, exist_ok=True)
    # Objects exist before the function starts (its notification rule then publishes nothing itself).
    for key in ("legit.png", "one.png", "two.png"):
        store.put(IN, key, f"pixels of {key}".encode())
    store.put(OUT, "old.png", b"the processed copy")
    yield kafka_bootstrap, config, log, store
    log.close()


def test_a_record_of_the_output_bucket_is_skipped_and_counted(world: Any) -> None:
    bootstrap, config, log, store = world
    before = store.head(OUT, "old.png")
    results: list[tuple[str, str]] = []
    app = _app(results)
    with FunctionHost(app, log=log, config=config, store_factory=lambda: store, options=FAST) as host:
        send(bootstrap, TOPIC[0], ceph_record(OUT, "old.png"))  # the output bucket notifies the shared topic
        send(bootstrap, TOPIC[0], ceph_record(IN, "legit.png"))
        wait_for(lambda: [k for _i, k in results] == ["legit.png"], timeout=90)
        wait_for(lambda: host.metrics()["scope.process"].succeeded == 1)
        stats = host.metrics()["scope.process"]
        assert stats.skipped_foreign == 1 and stats.dead_lettered == 0 and stats.succeeded == 1
        # Two records in one message: two events, each with its own id.
        send(bootstrap, TOPIC[0], ceph_record(IN, "one.png"), ceph_record(IN, "two.png"))
        wait_for(lambda: len(results) == 3, timeout=90)
        assert sorted(k for _i, k in results[1:]) == ["one.png", "two.png"]
        assert len({i for i, _k in results}) == 3
        wait_for(lambda: host.metrics()["scope.process"].succeeded == 3)
    after = store.head(OUT, "old.png")
    assert (after.etag, after.size) == (before.etag, before.size)
    with store.get(OUT, "old.png") as reader:
        assert reader.read() == b"the processed copy"
    assert not [k for _i, k in results if k == "old.png"]
    with store.get(OUT, "two.png") as reader:
        assert reader.read() == b"pixels of two.png (processed)"


def test_a_foreign_record_is_dead_lettered_when_the_trigger_asks(world: Any) -> None:
    from kawa.deadletter import read_reason

    bootstrap, config, log, store = world
    results: list[tuple[str, str]] = []
    dlq = f"{TOPIC[0]}.dlq"
    app = _app(results, on_foreign="dead-letter", dlq=dlq)
    with FunctionHost(app, log=log, config=config, store_factory=lambda: store, options=FAST) as host:
        send(bootstrap, TOPIC[0], ceph_record(OUT, "old.png"), ceph_record(IN, "legit.png"))
        wait_for(lambda: len(results) == 1, timeout=90)
        wait_for(lambda: host.metrics()["scope.process"].dead_lettered == 1)
        assert host.metrics()["scope.process"].skipped_foreign == 1
    (dead,) = read_all(log, dlq, 1, timeout=30)
    why = read_reason(dead.headers)
    assert why is not None and why.reason == "foreign-bucket" and why.attempts == 1
    assert OUT in why.message and IN in why.message and "old.png" not in why.message
    assert results[0][1] == "legit.png"
    with store.get(OUT, "old.png") as reader:
        assert reader.read() == b"the processed copy"


def test_over_http_a_foreign_record_is_acknowledged_without_running_the_handler() -> None:
    """The Knative shape: a KafkaSource delivery naming the output bucket is answered 202, never handled."""
    import json

    from kawa.functions.context import Runtime
    from kawa.functions.dedupe import MemoryDedupeStore
    from kawa.functions.http import BackgroundServer, create_app
    from kawa.log import open_log as open_any_log
    from tests.functions.test_http import post

    memlog = open_any_log("memory:")
    calls: list[str] = []
    app = App("web-scope")

    @app.function(bucket=IN, topic="t")
    def handle(event: CloudEvent, ctx: Context) -> None:
        calls.append(str(event.get_id()))

    runtime = Runtime(app.get("handle"), log=memlog, dedupe=MemoryDedupeStore())
    headers = {"ce-specversion": "1.0", "ce-id": "partition:0/offset:7", "ce-source": "/kafkasources/x#t",
               "ce-type": "dev.knative.kafka.event", "content-type": "application/json"}
    try:
        with BackgroundServer(create_app(runtime)) as srv:
            foreign = json.dumps({"Records": [ceph_record(OUT, "old.png")]}).encode()
            assert post(srv.url, foreign, headers)[0] == 202
            assert calls == [] and runtime.metrics.snapshot().skipped_foreign == 1
            legit = json.dumps({"Records": [ceph_record(IN, "legit.png")]}).encode()
            assert post(srv.url, legit, {**headers, "ce-id": "partition:0/offset:8"})[0] == 202
            assert len(calls) == 1
    finally:
        memlog.close()
