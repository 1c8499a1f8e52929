import pytest

from kawa.audit import AuditRecord


def test_record_round_trips_through_a_cloudevent() -> None:
    rec = AuditRecord(user="ann", action="bucket.create", resource="bucket/x", result="denied", request_id="r1",
                      status=403)
    event = rec.to_event()
    assert event.get_type() == "kawa.audit.v1"
    assert event.get_id() == "r1"
    assert AuditRecord.from_event(event) == rec


def test_unknown_result_is_rejected() -> None:
    with pytest.raises(ValueError):
        AuditRecord(user="a", action="x", resource="y", result="maybe", request_id="r")
