"""A route acts only on the buckets its ``fetch`` step (or bucket source) names, and on every record.

On the real broker (KAWA_TEST_KAFKA), Ceph-shaped notifications sent with a plain confluent-kafka Producer
to the topic a route reads: one naming the route's *output* bucket changes nothing there and is counted as
``skipped_foreign`` while a legit record after it is processed; a two-record notification gives two
messages with their own ids; a key that never existed is reported as such."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.config import load_config
from kawa.events import from_record
from kawa.log.base import TopicSpec
from kawa.routes.components.base import RouteContext
from kawa.routes.progress import ProgressStore
from kawa.routes.spec import route
from tests.functions.ceph import ceph_record, send
from tests.routes.conftest import read_topic, start, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

IN, OUT = "scans-in", "scans-anonymized"


@pytest.fixture
def kafka_ctx(kafka_bootstrap: str, tmp_path: Path) -> Iterator[RouteContext]:
    from kawa.platform import Platform

    config = load_config(home=str(tmp_path / ".kawa"), store={"uri": str(tmp_path / "buckets")},
                         log={"uri": f"kafka://{kafka_bootstrap}"})
    platform = Platform(config)
    progress = ProgressStore(config.path("routes", "progress.db"))
    ctx = RouteContext(route_id="scoped", config=config, progress=progress, backends=platform.backends)
    yield ctx
    ctx.stop.set()
    progress.close()
    platform.stop()


def test_the_route_skips_its_output_bucket_and_handles_every_record(
    kafka_bootstrap: str, kafka_ctx: RouteContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx, store = kafka_ctx, kafka_ctx.store
    topic = f"scoped-{uuid.uuid4().hex[:8]}"
    ctx.log.create_topic(TopicSpec(topic), exist_ok=True)
    for bucket in (IN, OUT):
        store.create_bucket(bucket, exist_ok=True)
    for key in ("legit.txt", "one.txt", "two.txt"):
        store.put(IN, key, f"text of {key}".encode(), content_type="text/plain")
    store.put(OUT, "old.txt", b"the anonymized copy", content_type="text/plain")
    before = store.head(OUT, "old.txt")
    spec = route(
        "scoped", f"topic:{topic}?group=g-{topic}", [{"fetch": {"bucket": IN}}],
        [f"bucket:{OUT}", f"topic:{topic}-out"], errors={"dead-letter": f"topic:{topic}.dlq"},
    )
    caplog.set_level(logging.INFO, logger="kawa.routes")
    worker = start(spec, ctx)
    try:
        send(kafka_bootstrap, topic, ceph_record(OUT, "old.txt"))  # the output bucket notifies the shared topic
        send(kafka_bootstrap, topic, ceph_record(IN, "legit.txt"))
        (first,) = read_topic(ctx, f"{topic}-out", 1, timeout=240)
        assert from_record(first).get_subject() == "legit.txt"
        assert ctx.counters.get("skipped_foreign") == 1 and worker.stats.dead_lettered == 0
        send(kafka_bootstrap, topic, ceph_record(IN, "one.txt"), ceph_record(IN, "two.txt"))
        send(kafka_bootstrap, topic, ceph_record(IN, "ghost.txt"))
        out = read_topic(ctx, f"{topic}-out", 3, timeout=240)
        wait_for(lambda: "object scans-in/ghost.txt no longer exists; skipped" in caplog.text, timeout=180)
    finally:
        worker.stop()
    events = [from_record(r) for r in out]
    assert sorted(str(e.get_subject()) for e in events) == ["legit.txt", "one.txt", "two.txt"]
    pair = [str(e.get_id()) for e in events if e.get_subject() in ("one.txt", "two.txt")]
    assert len(set(pair)) == 2 and {i.rsplit("#", 1)[1] for i in pair} == {"0", "1"}  # <id>#<index>
    assert worker.stats.skipped_foreign == 1 and worker.stats.dead_lettered == 0
    after = store.head(OUT, "old.txt")
    assert (after.etag, after.size) == (before.etag, before.size)
    with store.get(OUT, "old.txt") as reader:
        assert reader.read() == b"the anonymized copy"
    with store.get(OUT, "two.txt") as reader:
        assert reader.read() == b"text of two.txt"
    assert "deleted after its notification" not in caplog.text


def test_fetch_options_are_checked(kafka_ctx: RouteContext) -> None:
    from kawa.errors import InvalidRoute
    from kawa.routes.processors.fetch import Fetch

    with pytest.raises(InvalidRoute, match="on-foreign"):
        Fetch({"bucket": IN, "on-foreign": "process"}, kafka_ctx)
    with pytest.raises(InvalidRoute, match="unknown options"):
        Fetch({"buckets": IN}, kafka_ctx)



def test_a_foreign_record_is_dead_lettered_when_the_route_asks(kafka_bootstrap: str, kafka_ctx: RouteContext) -> None:
    from kawa.deadletter import read_reason

    ctx, store = kafka_ctx, kafka_ctx.store
    topic = f"scoped-{uuid.uuid4().hex[:8]}"
    ctx.log.create_topic(TopicSpec(topic), exist_ok=True)
    for bucket in (IN, OUT):
        store.create_bucket(bucket, exist_ok=True)
    store.put(IN, "legit.txt", b"text", content_type="text/plain")
    store.put(OUT, "old.txt", b"the anonymized copy", content_type="text/plain")
    spec = route(
        "scoped", f"topic:{topic}?group=g-{topic}", [{"fetch": {"bucket": IN, "on-foreign": "dead-letter"}}],
        f"bucket:{OUT}", errors={"dead-letter": f"topic:{topic}.dlq"},
    )
    worker = start(spec, ctx)
    try:
        send(kafka_bootstrap, topic, ceph_record(OUT, "old.txt"), ceph_record(IN, "legit.txt"))
        (dead,) = read_topic(ctx, f"{topic}.dlq", 1, timeout=240)
        wait_for(lambda: "legit.txt" in [o.key for o in store.list_objects(OUT).objects], timeout=180)
    finally:
        worker.stop()
    why = read_reason(dead.headers)
    assert why is not None and (why.reason, why.kind, why.attempts) == ("foreign-bucket", "route", 1)
    assert why.source_topic == topic and "old.txt" not in why.message
    with store.get(OUT, "old.txt") as reader:
        assert reader.read() == b"the anonymized copy"
