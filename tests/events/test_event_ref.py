"""EventRef: one identity of an event (source + id), its key, JSON and table forms, and the schemas that carry it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kawa.errors import EventError
from kawa.events import EventRef, event_key, from_record, new_event
from kawa.events.schemas import Prediction, read_data
from kawa.log.base import Record
from kawa.log.memory import MemoryLog
from kawa.ml.prediction_log import PredictionLogger, read_prediction

_text = st.text(st.characters(blacklist_characters="\x1f", blacklist_categories=["Cs"]), min_size=1, max_size=40)


def test_the_key_is_the_dedupe_key_the_store_has_always_used() -> None:
    event = new_event("t", "/shop", {"n": 1}, id="42")
    ref = EventRef.of(event)
    assert ref == EventRef("/shop", "42")
    assert ref.key() == "/shop\x1f42" == event_key(event)  # existing dedupe state keeps matching
    assert EventRef.parse(ref.key()) == ref
    assert ref.to_json() == {"source": "/shop", "id": "42"}
    assert EventRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref


@given(source=_text, id=st.text(min_size=1, max_size=40))
def test_parse_reads_back_every_key(source: str, id: str) -> None:
    ref = EventRef(source, id)
    assert EventRef.parse(ref.key()) == ref  # ids may hold anything, the separator included


def test_same_id_from_two_sources_are_two_events() -> None:
    a, b = EventRef("ceph:s3.default.xray-images", "e1"), EventRef("kawa:s3.local.xray-images", "e1")
    assert a != b and a.key() != b.key() and len({a, b}) == 2


def test_find_reads_every_form_a_record_may_carry() -> None:
    ref = EventRef("/src", "1")
    assert EventRef.find({"event": {"source": "/src", "id": "1"}}) == ref
    assert EventRef.find({"event_source": "/src", "event_id": "1"}) == ref
    assert EventRef.find({"event_id": "1"}) is None  # an id alone names no event
    assert EventRef.find({"event": None, "event_id": None}) is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: EventRef("", "1"), "non-empty source and id"),
        (lambda: EventRef.parse("no separator"), "EventRef.key"),
        (lambda: EventRef.from_json({"source": "/s"}), "two strings"),
    ],
)
def test_bad_refs_are_refused_with_what_to_do(call: Any, message: str) -> None:
    with pytest.raises(EventError, match=message):
        call()


def _prediction_records(log: MemoryLog) -> list[Record]:
    consumer = log.consumer("check", ["predictions"], auto_offset_reset="earliest")
    try:
        return list(consumer.poll(timeout=0.5, max_records=100))
    finally:
        consumer.close()


def test_a_prediction_records_the_ref_of_the_event_it_served() -> None:
    log = MemoryLog()
    logger = PredictionLogger(log)
    ref = EventRef("/uploads", "u-7")
    try:
        logger.record("m", 3, np.zeros((1, 2)), np.array([0.25]), 0.001, event=ref)
        logger.record("m", 3, np.zeros((1, 2)), np.array([0.5]), 0.001, event_id="legacy-only")
        logger.flush()
    finally:
        logger.close()
    first, second = (read_prediction(r) for r in _prediction_records(log))
    assert first.ref == ref and first.event_id == "u-7" and first.output == [0.25] and first.version == 3
    assert from_record(_prediction_records(log)[0]).get_data()["event"] == {"source": "/uploads", "id": "u-7"}  # type: ignore[index]
    assert second.ref is None and second.event_id == "legacy-only"


def test_predictions_written_before_the_ref_are_still_read() -> None:
    old = {"model": "m", "version": 1, "event_id": "e1", "input_shape": [1, 2], "input_digest": "sha256:ab",
           "output": [0.1], "latency_ms": 1.5, "batch_size": 1, "time_ms": 1}  # fmt: skip
    prediction = read_data(Prediction, json.dumps(old).encode())
    assert prediction.ref is None and prediction.event_id == "e1" and prediction.model == "m"
    with pytest.raises(EventError, match="'version'"):
        read_data(Prediction, {**old, "version": "latest"})
