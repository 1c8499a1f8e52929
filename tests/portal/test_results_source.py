"""The portal reads an app's events with the schema the app declares for their type: one shape for every reader."""

from __future__ import annotations

from typing import Any

from kawa.apps.xray.events import ASSESSED_TYPE, XrayAssessed
from kawa.events import EventRef, new_event, to_kafka
from kawa.log.base import Record
from kawa.portal.sources.events import parse_event


def _record(event_type: str, data: dict[str, Any]) -> Record:
    key, value, headers = to_kafka(new_event(event_type, "/kawa/functions/xray/risk-assessment", data))
    return Record("xray-results", 0, 0, key, value, tuple(headers), timestamp_ms=1_700_000_000_000)


RESULT = {"bucket": "xray-images", "key": "scans/a.png", "processed_bucket": "xray-images-processed",
          "processed_key": "scans/a.png", "model": "pneumonia", "model_version": 3, "trained_on": "generated images",
          "risk": 0.91, "label": "Pneumonia", "latency_ms": 12.5, "e2e_ms": 40.0, "time": 1_700_000_000.5}  # fmt: skip


def test_a_result_is_read_with_the_apps_schema_and_carries_its_input_events_ref() -> None:
    ref = EventRef("kawa:s3.local.xray-images", "e1")
    data = XrayAssessed.model_validate({**RESULT, "event": ref.to_json()}).data()
    row = parse_event(_record(ASSESSED_TYPE, {**data, "extra": "ignored"}))
    assert row is not None
    assert row.data == data  # exactly the schema's fields: unknown ones dropped, none guessed
    assert row.data["model_version"] == 3 and row.data["event"] == ref.to_json()
    assert row.time == 1_700_000_000.5


def test_results_from_before_the_ref_are_still_read() -> None:
    old = parse_event(_record(ASSESSED_TYPE, RESULT))
    assert old is not None and old.data["model_version"] == 3 and old.data.get("event") is None
    other = parse_event(_record("dev.kawa.other", {"score": 0.5}))  # no schema declared: read as it is
    assert other is not None and other.data == {"score": 0.5}
