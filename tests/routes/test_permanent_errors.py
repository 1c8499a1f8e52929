"""Permanent errors are not redelivered: a decompression bomb and bytes that are no image reach a route's
``pixel-redact`` step and are dead-lettered after exactly one attempt, with the same header schema as a
function's dead letters (tests/functions/test_permanent_errors.py) and a message free of reprs and content."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kawa.deadletter import read_reason
from kawa.events import new_event, to_kafka
from kawa.log.base import TopicSpec
from kawa.routes.components.base import RouteContext
from kawa.routes.spec import route
from tests.functions.bad_images import PHI_MARKER, bomb_png, not_an_image, schema_names
from tests.functions.test_permanent_errors import EXPECTED_NAMES
from tests.routes.conftest import read_topic, start, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("bomb", [bomb_png(), bomb_png(10000, 10000)], ids=["bomb-error", "bomb-warning"])
def test_bomb_and_undecodable_image_are_dead_lettered_after_one_attempt(
    make_ctx: Callable[[str], RouteContext], bomb: bytes
) -> None:
    ctx = make_ctx("redact")
    ctx.log.create_topic(TopicSpec("scans-in"), exist_ok=True)
    producer = ctx.log.producer()
    images = {"bomb": bomb, "garbage": not_an_image()}
    for name, data in images.items():
        _key, value, headers = to_kafka(new_event("scan", "/t", data, id=name, datacontenttype="image/png"))
        producer.produce("scans-in", value, headers=headers)
    producer.flush()
    producer.close()
    spec = route(
        "redact", "topic:scans-in", [{"pixel-redact": {"boxes": [[0, 0, 0.5, 0.5]]}}], "topic:scans-out",
        errors={"dead-letter": "topic:scans.dlq", "max-redeliveries": 4, "delay": 0.01},
    )
    worker = start(spec, ctx)
    try:
        dead = read_topic(ctx, "scans.dlq", 2)
        wait_for(lambda: worker.stats.dead_lettered == 2)
    finally:
        worker.stop()
    assert worker.stats.redeliveries == 0 and worker.stats.delivered == 0
    reasons = {}
    for record in dead:
        why = read_reason(record.headers)
        assert why is not None
        reasons[record.value] = why
        assert why.attempts == 1 and why.kind == "route" and why.component == "redact"
        assert (why.source_topic, why.source_partition) == ("scans-in", 0)
        assert "0x" not in why.message and PHI_MARKER not in why.message and "BytesIO" not in why.message
        assert schema_names(record.headers) == EXPECTED_NAMES  # the function's schema, name for name
    assert reasons[images["bomb"]].reason == "decompression-bomb"
    assert reasons[images["garbage"]].reason == "undecodable"
