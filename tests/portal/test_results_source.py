"""The portal's results tail reads an app's result events with the app's schema: one shape, no guessed fields."""

from __future__ import annotations

from typing import Any

from kawa.apps.xray.events import ASSESSED_TYPE, XrayAssessed
from kawa.events import EventRef, new_event, to_kafka
from kawa.log.base import Record
from kawa.portal.sources.results import parse_result


def _record(event_type: str, data: dict[str, Any]) -> Record:
    key, value, headers = to_kafka(new_event(event_type, "/kawa/functions/xray/risk-assessment", data))
    return Record("xray-results", 0, 0, key, value, tuple(headers), timestamp_ms=1_700_000_000_000)


RESULT = {"bucket": "xray-images", "key": "scans/a.png", "processed_bucket": "xray-images-processed",
          "processed_key": "scans/a.png", "model": "pneumonia", "model_version": 3, "trained_on": "generated images",
          "risk": 0.91, "label": "Pneumonia", "latency_ms": 12.5, "e2e_ms": 40.0, "time": 1_700_000_000.5}  # fmt: skip


def test_a_result_is_read_with_the_apps_schema_and_carries_its_input_events_ref() -> None:
    ref = EventRef("kawa:s3.local.xray-images", "e1")
    data = XrayAssessed.model_validate({**RESULT, "event": ref.to_json()}).data()
    row = parse_result(_record(ASSESSED_TYPE, data), XrayAssessed)
    assert row is not None
    assert (row.object, row.model, row.version) == ("scans/a.png", "pneumonia", 3)
    assert (row.risk, row.label) == (0.91, "Pneumonia")
    assert (row.event_source, row.event_id) == (ref.source, ref.id) and row.time == 1_700_000_000.5
    # The schema is registered for the type, so a tail given none reads the same row.
    assert parse_result(_record(ASSESSED_TYPE, data)) == row


def test_results_from_before_the_ref_are_still_read_and_anything_else_is_no_result() -> None:
    old = parse_result(_record(ASSESSED_TYPE, RESULT))
    assert old is not None and old.version == 3 and old.event_id is None and old.event_source is None
    assert parse_result(_record(ASSESSED_TYPE, {**RESULT, "model_version": "three"})) is None
    assert parse_result(_record("dev.kawa.other", {"score": 0.5})) is None  # no schema: no guessing
