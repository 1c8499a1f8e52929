"""Decision records and outcome events: the app-declared snapshot (PHI dropped) and the CloudEvent wire form."""

from __future__ import annotations

import json
import math

import pytest

from kawa.errors import EventError
from kawa.events.cloudevents import from_kafka, new_event, to_kafka
from kawa.events.ref import EventRef
from kawa.events.schemas import schema_for
from kawa.log.base import Record
from kawa.monitor.errors import MonitorError
from kawa.monitor.records import (
    DECISION_EVENT,
    OUTCOME_EVENT,
    DecisionData,
    DecisionRecord,
    FeatureDecl,
    OutcomeData,
    OutcomeEvent,
    SnapshotSpec,
    decode,
    flatten,
)

SPEC = SnapshotSpec(
    (
        FeatureDecl("lactate"),
        FeatureDecl("heart_rate"),
        FeatureDecl("ward", "categorical"),
        FeatureDecl("mrn", "categorical", phi=True),
        FeatureDecl("age", phi=True),
    )
)


def decision(**kw: object) -> DecisionRecord:
    base: dict[str, object] = {
        "ref": EventRef("kawa/sepsis", "ev-1"),
        "model": "sepsis",
        "version": 7,
        "entity": "patient-42",
        "decided_at": 1_764_650_000.5,
        "score": 0.83,
        "features": SPEC.snapshot({"lactate": 2.1, "heart_rate": 118, "ward": 3, "mrn": "123-45", "age": 71}),
    }
    base.update(kw)
    return DecisionRecord(**base)  # type: ignore[arg-type]


def test_the_snapshot_keeps_declared_features_and_drops_phi_and_undeclared_inputs() -> None:
    snap = SPEC.snapshot(
        {"lactate": "2.5", "heart_rate": float("nan"), "ward": 4, "mrn": "123", "age": 70, "notes": "x"}
    )
    assert snap == {"lactate": 2.5, "heart_rate": None, "ward": "4"}
    assert SPEC.recorded == ("lactate", "heart_rate", "ward")
    assert SPEC.excluded == ("mrn", "age")
    assert SPEC.categorical == ("ward",)
    # a declared feature the inputs lack is recorded as missing, not left out
    assert SPEC.snapshot({}) == {"lactate": None, "heart_rate": None, "ward": None}
    assert SnapshotSpec.of(numeric=["a"], categorical=["c"], phi=["p"]).snapshot({"a": 1, "c": "u", "p": 9}) == {
        "a": 1.0,
        "c": "u",
    }


def test_declarations_are_checked() -> None:
    with pytest.raises(MonitorError, match="declared numeric"):
        SPEC.snapshot({"lactate": "high"})
    with pytest.raises(MonitorError, match="once"):
        SnapshotSpec((FeatureDecl("a"), FeatureDecl("a", "categorical")))
    with pytest.raises(MonitorError, match="kind"):
        FeatureDecl("a", "text")  # type: ignore[arg-type]
    with pytest.raises(MonitorError, match="score, its action"):
        decision(score=None)
    with pytest.raises(MonitorError, match="propensity"):
        decision(propensity=0.0)
    with pytest.raises(MonitorError, match="EventRef"):
        OutcomeEvent(1.0, label=1)
    with pytest.raises(MonitorError, match="label"):
        OutcomeEvent(1.0, entity="p", label=2)
    with pytest.raises(MonitorError, match="carries a label"):
        OutcomeEvent(1.0, entity="p")


def test_a_decision_round_trips_through_the_kafka_binary_form_as_compact_json() -> None:
    record = decision(arm="B", propensity=0.5, action="alert")
    event = record.to_event("kawa/functions/sepsis-score")
    assert event.get_type() == DECISION_EVENT
    key, value, headers = to_kafka(event)
    assert key == b"sepsis"  # partitioned by model
    assert b" " not in value and b"mrn" not in value and b"age" not in value
    data = json.loads(value)
    assert data["features"] == {"lactate": 2.1, "heart_rate": 118.0, "ward": "3"}
    assert "value" not in data  # fields without a value are left out
    back = decode(from_kafka(key, value, headers))
    assert back == record
    # through a log record too, and the id is the decision's identity: writing it twice is one event
    assert decode(Record("decisions", 0, 0, key, value, tuple(headers))) == record
    assert record.to_event("kawa/functions/sepsis-score").get_id() == event.get_id()
    assert decision(version=8).to_event("x").get_id() != event.get_id()
    assert schema_for(DECISION_EVENT) is DecisionData and schema_for(OUTCOME_EVENT) is OutcomeData


def test_a_missing_feature_stays_in_the_snapshot_as_null() -> None:
    record = decision(features={"lactate": None, "ward": "2"}, score=None, action="observe")
    _, value, _ = to_kafka(record.to_event("s"))
    assert json.loads(value) == {
        "event": {"source": "kawa/sepsis", "id": "ev-1"},
        "model": "sepsis",
        "version": 7,
        "entity": "patient-42",
        "decided_at": 1_764_650_000.5,
        "action": "observe",
        "features": {"lactate": None, "ward": "2"},
    }


@pytest.mark.parametrize(
    "outcome",
    [
        OutcomeEvent(100.0, ref=EventRef("kawa/sepsis", "ev-1"), label=1),
        OutcomeEvent(100.0, entity="card-9", at=50.0, value=312.5, id="chargeback-77"),
    ],
)
def test_an_outcome_round_trips(outcome: OutcomeEvent) -> None:
    event = outcome.to_event("kawa/outcomes", id="o-1")
    assert event.get_type() == OUTCOME_EVENT and event.get_id() == "o-1"
    key, value, headers = to_kafka(event)
    assert key is not None and b" " not in value
    assert decode(from_kafka(key, value, headers)) == outcome


def test_outcome_identity_is_its_content_or_its_source_id() -> None:
    a = OutcomeEvent(100.0, entity="p", at=90.0, label=1)
    assert a.key == OutcomeEvent(101.0, entity="p", at=90.0, label=1).key  # sent again later: same outcome
    assert a.key != OutcomeEvent(100.0, entity="p", at=91.0, label=1).key
    assert a.time == 90.0 and OutcomeEvent(100.0, entity="p", label=0).time == 100.0
    assert OutcomeEvent(1.0, entity="p", label=1, id="x").key == OutcomeEvent(2.0, entity="q", label=0, id="x").key


def test_decode_skips_other_types_and_names_bad_data() -> None:
    assert decode(new_event("kawa.prediction", "s", {"model": "m"})) is None
    with pytest.raises(EventError, match="DecisionData data is invalid at 'version'"):
        decode(new_event(DECISION_EVENT, "s", {"event": {"source": "a", "id": "b"}, "model": "m", "version": "x"}))
    with pytest.raises(EventError, match="carries a label"):
        decode(new_event(OUTCOME_EVENT, "s", {"entity": "p", "observed_at": 1.0}))
    with pytest.raises(EventError, match="no data"):
        decode(new_event(OUTCOME_EVENT, "s", None))
    assert math.isfinite(decision().decided_at)


def test_log_records_are_read_on_the_fast_path_and_structured_mode_through_the_sdk() -> None:
    record = decision()
    key, value, headers = to_kafka(record.to_event("s"))
    binary = Record("decisions", 0, 0, key, value, tuple(headers))
    assert decode(binary) == decode(from_kafka(key, value, headers)) == record
    bad = Record("decisions", 0, 1, key, b'{"model":"m"}', tuple(headers))
    with pytest.raises(EventError, match="DecisionData data is invalid at 'event'"):
        decode(bad)
    foreign = tuple((k, b"kawa.prediction" if k == "ce_type" else v) for k, v in headers)
    assert decode(Record("decisions", 0, 2, key, value, foreign)) is None
    structured = json.dumps(
        {"specversion": "1.0", "type": DECISION_EVENT, "source": "s", "id": "1", "data": json.loads(value)}
    ).encode()
    ce_json = (("content-type", b"application/cloudevents+json"),)
    assert decode(Record("decisions", 0, 3, key, structured, ce_json)) == record
    with pytest.raises(EventError, match="not a CloudEvent"):
        decode(Record("decisions", 0, 4, None, b"{}", ()))


def test_an_image_summary_is_declared_as_vectors_and_recorded_element_wise() -> None:
    import numpy as np

    spec = SnapshotSpec.of(numeric=["contrast", "width"], vectors={"hist": 4, "embedding": 2}, phi=["patient_name"])
    summary = {
        "contrast": 0.4,
        "width": 1024,
        "hist": np.array([0.1, 0.2, 0.3, 0.4]),
        "embedding": [1.5, -2.0],
        "patient_name": "Jane Doe",
        "view": "PA",
    }
    snap = spec.snapshot(flatten(summary))
    assert snap == {
        "contrast": 0.4,
        "width": 1024.0,
        "hist_0": 0.1,
        "hist_1": 0.2,
        "hist_2": 0.3,
        "hist_3": 0.4,
        "embedding_0": 1.5,
        "embedding_1": -2.0,
    }
    assert flatten({"view": "PA", "n": 3}) == {"view": "PA", "n": 3}
