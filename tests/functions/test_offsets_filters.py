"""Commit points under out-of-order completion (property-tested) and Knative-style attribute filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.errors import InvalidFunction
from kawa.events import new_event
from kawa.functions.filters import EventFilter
from kawa.functions.offsets import OffsetTracker
from kawa.log.base import TopicPartition

TP = TopicPartition("t", 0)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_commit_point_is_the_lowest_unfinished_offset(data: st.DataObject) -> None:
    offsets = sorted(data.draw(st.sets(st.integers(0, 500), min_size=1, max_size=60)))  # gaps = compaction
    order = data.draw(st.permutations(offsets))
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.add(TP, offset)
    finished: set[int] = set()
    committed = None
    for offset in order:
        tracker.finish(TP, offset)
        finished.add(offset)
        unfinished = [o for o in offsets if o not in finished]
        point = tracker.committable().get(TP, committed)  # only a moved commit point is reported
        expected = unfinished[0] if unfinished else offsets[-1] + 1
        assert point == expected
        assert all(o in finished for o in offsets if o < point)  # never commits past an unfinished record
        assert point is not None
        tracker.mark_committed({TP: point})
        committed = point
        assert tracker.committable() == {}
    assert tracker.unfinished() == 0


def test_reset_forgets_a_revoked_partition() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 5)
    tracker.reset([TP])
    tracker.finish(TP, 5)  # a completion that arrives after the revocation changes nothing
    assert tracker.committable() == {}
    tracker.add(TP, 3)  # re-assigned: reading again from the committed offset is fine
    assert tracker.committable() == {TP: 3}


def test_offsets_must_arrive_in_order() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 4)
    with pytest.raises(ValueError):
        tracker.add(TP, 4)


S3_PUT = new_event(
    "com.amazonaws.s3.ObjectCreated:Put", "ceph:s3.zg.xray-images", {"Records": []}, subject="in/img1.dcm",
    time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), extensions={"tenant": "clinic-a"},
)
S3_DELETE = new_event("com.amazonaws.s3.ObjectRemoved:Delete", "ceph:s3.zg.xray-images", subject="in/img1.dcm")


@pytest.mark.parametrize(
    ("spec", "put", "delete"),
    [
        (None, True, True),
        ({"type": "com.amazonaws.s3.ObjectCreated:Put"}, True, False),
        ({"type": {"prefix": "com.amazonaws.s3.ObjectCreated"}}, True, False),
        ({"subject": {"suffix": ".dcm"}, "type": {"prefix": "com.amazonaws.s3."}}, True, True),
        ({"exact": {"tenant": "clinic-a"}}, True, False),  # an extension attribute; missing = no match
        ({"any": [{"prefix": {"type": "com.amazonaws.s3.ObjectRemoved"}}, {"tenant": "clinic-a"}]}, True, True),
        ({"not": {"type": {"prefix": "com.amazonaws.s3.ObjectRemoved"}}}, True, False),
        ({"all": [{"suffix": {"subject": ".dcm"}}, {"not": {"exact": {"tenant": "clinic-b"}}}]}, True, True),
        ([{"source": {"suffix": "xray-images"}}, {"subject": {"prefix": "out/"}}], False, False),
        ({"time": {"prefix": "2024-05-01T12:00"}}, True, False),
    ],
)
def test_filters_match_attributes_like_knative_triggers(spec: object, put: bool, delete: bool) -> None:
    f = EventFilter(spec)
    assert f.matches(S3_PUT) is put
    assert f.matches(S3_DELETE) is delete


def test_explain_says_which_attribute_failed() -> None:
    reason = EventFilter({"type": {"prefix": "com.amazonaws.s3.ObjectCreated"}}).explain(S3_DELETE)
    assert reason == "type='com.amazonaws.s3.ObjectRemoved:Delete' does not start with 'com.amazonaws.s3.ObjectCreated'"
    assert EventFilter({"tenant": "x"}).explain(S3_DELETE) == "the event has no 'tenant' attribute"


def test_filters_never_look_at_data() -> None:
    with_data = new_event("t", "/s", {"type": "com.amazonaws.s3.ObjectCreated:Put"})
    assert not EventFilter({"type": {"prefix": "com.amazonaws"}}).matches(with_data)


@pytest.mark.parametrize(
    "spec",
    [
        {"Type": "x"},  # attribute names are lowercase
        {"type": {"contains": "x"}},
        {"prefix": {"type": ""}},
        {"any": []},
        {"cesql": "type = 'x'"},
        "type=x",
        {"type": 3},
    ],
)
def test_invalid_filters_are_refused_with_a_reason(spec: object) -> None:
    with pytest.raises(InvalidFunction):
        EventFilter(spec)


def test_an_offset_holding_several_events_finishes_with_the_last_of_them() -> None:
    tp = TopicPartition("t", 0)
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.add(tp, offset)
    tracker.expect(tp, 0, 2)  # a notification of two records
    tracker.expect(tp, 1, 0)  # an s3:TestEvent: nothing to run, finished at once
    assert tracker.committable() == {tp: 0}
    tracker.finish(tp, 0)
    assert tracker.committable() == {tp: 0}, "one of its two events is still running"
    tracker.finish(tp, 2)
    tracker.finish(tp, 0)
    assert tracker.committable() == {tp: 3}


def test_a_trigger_scope_names_foreign_buckets() -> None:
    from kawa.events.s3 import to_cloudevent
    from kawa.functions.filters import TriggerScope
    from tests.functions.ceph import ceph_record

    scope = TriggerScope(["xray-images"])
    assert scope.foreign(to_cloudevent(ceph_record("xray-images", "a.png"))) is None
    reason = scope.foreign(to_cloudevent(ceph_record("xray-images-processed", "a.png")))
    assert reason is not None and "xray-images-processed" in reason and "a.png" not in reason
    assert TriggerScope().foreign(to_cloudevent(ceph_record("any", "a.png"))) is None
    assert scope.foreign(new_event("orders.created", "/shop", {"n": 1})) is None  # not a bucket event
    with pytest.raises(InvalidFunction, match="on_foreign"):
        TriggerScope(["b"], "process")
