"""Permanent errors are not retried: a decompression bomb and bytes that are no image are dead-lettered by a
function after exactly one attempt, in the one dead-letter schema, with a message free of reprs and content.
(tests/routes/test_permanent_errors.py checks the same for a route, with the same header names.)"""

from __future__ import annotations

import io

import pytest

from kawa.deadletter import read_reason
from kawa.events import CloudEvent, new_event
from kawa.functions import App, Context, FunctionHost
from kawa.log.base import EventLog, TopicSpec
from tests.functions.bad_images import PHI_MARKER, bomb_png, not_an_image, schema_names
from tests.functions.conftest import FAST, produce, read_all, wait_for

pytestmark = pytest.mark.timeout(60)


def test_bomb_and_undecodable_image_are_dead_lettered_after_one_attempt(memlog: EventLog) -> None:
    from PIL import Image

    app = App("img")
    attempts: dict[str, list[int]] = {}

    @app.function(topic="scans", retries=4, backoff_s=0.01, max_backoff_s=0.02)
    def decode(event: CloudEvent, ctx: Context) -> None:
        attempts.setdefault(str(event.get_id()), []).append(ctx.attempt)
        data = event.get_data()
        raw = data if isinstance(data, bytes) else str(data).encode()  # text-like bytes come back as str
        Image.open(io.BytesIO(raw)).load()  # the handler does nothing special: Kawa classifies the error

    memlog.create_topic(TopicSpec("scans"))
    images = {"bomb": bomb_png(), "garbage": not_an_image()}
    produce(memlog, "scans", [new_event("scan", "/t", data, id=name, datacontenttype="image/png")
                              for name, data in images.items()])
    with FunctionHost(app, log=memlog, options=FAST) as host:
        wait_for(lambda: host.metrics()["img.decode"].dead_lettered == 2)
        stats = host.metrics()["img.decode"]
    assert attempts == {"bomb": [1], "garbage": [1]} and stats.retries == 0
    dead = read_all(memlog, "scans.dlq", 2)
    reasons = {}
    for record in dead:
        why = read_reason(record.headers)
        assert why is not None
        reasons[record.value] = why
        assert why.attempts == 1 and why.kind == "function" and why.component == "img.decode"
        assert (why.source_topic, why.source_partition) == ("scans", 0)
        assert "0x" not in why.message and PHI_MARKER not in why.message and "BytesIO" not in why.message
        assert schema_names(record.headers) == EXPECTED_NAMES
    assert reasons[images["bomb"]].reason == "decompression-bomb"
    assert reasons[images["garbage"]].reason == "undecodable"


EXPECTED_NAMES = {
    f"{prefix}{name}"
    for prefix, names in (
        ("kawa-dlq-", ("version", "reason", "message", "attempts", "kind", "component", "source-topic",
                       "source-partition", "source-offset", "first-failure", "last-failure")),
        ("ce_kawadlq", ("version", "reason", "message", "attempts", "kind", "component", "topic", "partition",
                        "offset", "firstfailure", "lastfailure")),
    )
    for name in names
}
