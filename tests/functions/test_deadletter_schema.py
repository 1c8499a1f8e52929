"""The one dead-letter schema (kawa.deadletter): written as plain headers and CloudEvent extensions, read
back by one parser (which also reads the version-1 headers of older records), messages without reprs."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from kawa.deadletter import (
    DeadLetterReason,
    classify,
    describe_error,
    for_error,
    is_reason_header,
    read_reason,
    scrub,
    with_reason,
)
from kawa.errors import EventError, MessageRejected
from kawa.events import from_record, new_event, to_kafka
from kawa.functions import PermanentError
from kawa.log.base import Record
from tests.functions.bad_images import PHI_MARKER, bomb_png, not_an_image


def test_reason_round_trips_through_headers_and_reads_as_a_cloudevent() -> None:
    when = datetime(2026, 12, 1, 22, 0, 0, 123000, tzinfo=UTC)
    why = DeadLetterReason("undecodable", "the bytes are not a PNG or JPEG image", 1, "route", "deid",
                           "xray-images", 3, 41, when, when)
    _key, value, headers = to_kafka(new_event("x.y", "/src", {"a": 1}, id="e1"))
    out = with_reason([*headers, ("kawa-error-type", b"Old"), ("ce_kawaerror", b"old")], why)
    assert not [h for h, _v in out if h in ("kawa-error-type", "ce_kawaerror")], "older reasons are replaced"
    names = {h for h, _v in out}
    assert {"kawa-dlq-reason", "ce_kawadlqreason", "kawa-dlq-source-offset", "ce_kawadlqoffset"} <= names
    assert read_reason(out) == why
    record = Record("t.dlq", 0, 0, None, value, tuple(out), 0)
    event = from_record(record)
    assert event.get_id() == "e1" and event.get_extension("kawadlqreason") == "undecodable"
    assert read_reason(event.get_attributes()) == why  # the parser also reads attributes / message headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("kawa-error-type", b"ValueError"), ("kawa-error-message", b"bad order"), ("kawa-attempts", b"4"),
          ("kawa-function", b"shop.check"), ("kawa-source-topic", b"orders")],
         ("handler-error", "bad order", 4, "function", "shop.check", "orders")),
        ([("ce_kawaerrortype", b"PermanentError"), ("ce_kawaerrormessage", b"no customer")],
         ("invalid-input", "no customer", 0, "function", "", None)),
        ([("ce_kawaerror", b"rejected: not a readable DICOM file"), ("ce_kawaroute", b"deid"),
          ("ce_kawaattempts", b"0")],
         ("invalid-input", "rejected: not a readable DICOM file", 0, "route", "deid", None)),
    ],
)
def test_version_one_headers_are_still_read(headers: list[tuple[str, bytes]], expected: tuple[object, ...]) -> None:
    why = read_reason(headers)
    assert why is not None and why.version == 1
    assert (why.reason, why.message, why.attempts, why.kind, why.component, why.source_topic) == expected
    assert all(is_reason_header(name) for name, _v in headers)


def test_records_without_a_reason_have_none() -> None:
    assert read_reason([("ce_type", b"x"), ("content-type", b"application/json")]) is None


def _pil_error(data: bytes) -> BaseException:
    from PIL import Image

    try:
        Image.open(io.BytesIO(data)).load()
    except Exception as exc:
        return exc
    raise AssertionError("the bytes decoded")


def test_errors_get_stable_codes_and_messages_without_reprs_or_content() -> None:
    bomb, garbage = _pil_error(bomb_png()), _pil_error(not_an_image())
    assert "0x" in str(garbage), "Pillow's own message carries a repr (the reason this test exists)"
    assert classify(bomb) == "decompression-bomb" and classify(garbage) == "undecodable"
    for error in (bomb, garbage):
        text = describe_error(error)
        assert "0x" not in text and "BytesIO" not in text and PHI_MARKER not in text
    assert "decompression bomb" in describe_error(bomb)
    try:
        try:
            raise ValueError("inner")
        except ValueError:
            raise PermanentError("x.png: not an image") from None
    except PermanentError as exc:
        assert classify(exc) == "invalid-input"
    assert classify(EventError("not JSON")) == "undecodable"
    assert classify(MessageRejected("invalid")) == "invalid-input"
    assert classify(TimeoutError("slow")) == "timeout" and classify(RuntimeError("x")) == "handler-error"
    assert scrub("cannot read <_io.BytesIO object at 0x7f3a2b1c0d90> now") == "cannot read (the data) now"


def test_for_error_fills_the_schema() -> None:
    why = for_error(RuntimeError("boom"), attempts=3, kind="function", component="a.f", source_topic="in",
                    source_partition=1, source_offset=7)
    assert (why.reason, why.message, why.attempts, why.permanent) == ("handler-error", "boom", 3, False)
    assert why.first_failure is not None and why.first_failure == why.last_failure
    assert read_reason(why.headers()) == why
