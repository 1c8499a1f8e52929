"""One event, one identity: a real upload runs through the X-ray function in the embedded host, and its
EventRef (source + id) joins the function's dedupe state, the results row, the prediction record and the result
event. The same id from another source is another event; the same ref again is a duplicate."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kawa.apps.xray.generator import Generator
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.stack import XrayStack
from kawa.events import EventRef, from_record, new_event, to_kafka
from kawa.events.schemas import Prediction
from kawa.log.base import Record
from kawa.ml.prediction_log import read_prediction

from .conftest import TrainedModel
from .xray_checks import read_topic


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def test_one_event_ref_joins_dedupe_results_and_predictions(
    tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel
) -> None:
    settings = XraySettings(partitions=1, seed=5)
    stack = XrayStack(trained_model.config(tmp_path_factory.mktemp("xray-ref") / ".kawa"), settings, route=False)
    stack.start()
    try:
        generator = Generator(settings, store=stack.store, seed=5)
        upload = generator.upload(generator.prepare("png"))
        wait_for(lambda: stack.results.count() == 1, "the upload has its row")
        (notification,) = read_topic(stack.log, settings.images_topic, 1)
        original = from_record(notification)
        first = EventRef.of(original)

        runner = stack.host.runner("risk-assessment")  # type: ignore[union-attr]
        dedupe, scope = runner.runtime.dedupe, runner.runtime.scope
        # The host marks an event finished once its outputs are flushed, just after the row is written.
        wait_for(lambda: dedupe.status(scope, first.key()) == "done", "the upload's event is marked finished")

        # The same event again (a redelivery), then the same id from another source: a different event.
        other = EventRef("ceph:s3.default." + settings.incoming_bucket, first.id)
        assert other.id == first.id and other != first
        copy = new_event(str(original.get_type()), other.source, original.get_data(), id=other.id,  # type: ignore[arg-type]
                         subject=original.get_subject(), time=original.get_time())
        _key, value, headers = to_kafka(copy)
        producer = stack.log.producer()
        producer.produce(settings.images_topic, notification.value, key=notification.key,
                         headers=list(notification.headers))
        producer.produce(settings.images_topic, value, key=notification.key, headers=headers)
        producer.flush()
        producer.close()

        wait_for(lambda: stack.results.count() == 2, "the other source's event has its own row")
        wait_for(lambda: runner.runtime.metrics.snapshot().duplicates >= 1, "the redelivery is seen as a duplicate")

        # Dedupe state: both refs finished, each under its own key (the old source\x1fid form).
        wait_for(lambda: all(dedupe.status(scope, ref.key()) == "done" for ref in (first, other)),
                 "both events are marked finished in the dedupe store")
        assert dedupe.status(scope, first.key()) == "done" and first.key() == f"{first.source}\x1f{first.id}"

        # Results table: one row per ref, both for the one object.
        rows = {row.ref: row for row in stack.results.rows()}
        assert set(rows) == {first, other} and {r.object_key for r in rows.values()} == {upload.key}

        # Predictions: one record per ref, with the risk the row holds.
        def predictions() -> dict[EventRef | None, Prediction]:
            topic = stack.config.ml.predictions_topic
            return {p.ref: p for p in map(read_prediction, _all(stack, topic))}

        wait_for(lambda: {first, other} <= set(predictions()), "both predictions are on the log")
        by_ref = predictions()
        for ref, row in rows.items():
            assert ref is not None
            prediction = by_ref[ref]
            assert (prediction.model, prediction.version) == (row.model_name, row.model_version)
            assert prediction.output is not None and abs(_first(prediction.output) - row.risk) < 1e-6

        # Result events: each names the event it is about.
        results = [from_record(r).get_data() for r in read_topic(stack.log, settings.results_topic, 2)]
        assert sorted(EventRef.from_json(d["event"]) for d in results) == sorted([first, other])  # type: ignore[index]
    finally:
        stack.stop()


def _all(stack: XrayStack, topic: str) -> list[Record]:
    return read_topic(stack.log, topic, stack.topic_size(topic), timeout=10.0)


def _first(values: list[object]) -> float:
    while isinstance(values, list):
        values = values[0]  # type: ignore[assignment]
    return float(values)  # type: ignore[arg-type]
