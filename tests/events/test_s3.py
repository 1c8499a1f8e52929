"""The one S3 envelope parser (:mod:`kawa.events.s3`) over every documented notification format (written from
the formats' descriptions), its unwrapping into one S3 CloudEvent per record, and ordering by sequencer."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kawa.errors import EventError
from kawa.events import new_event, to_kafka
from kawa.events.s3 import S3Record, from_raw_value, parse_records, to_cloudevent, unwrap
from kawa.log.base import Record
from kawa.store import SequencerTracker, order_events, sequencer_value
from kawa.store.parse import latest_per_object
from kawa.store.records import make_record
from tests.functions.ceph import ceph_record

CEPH = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "ceph:s3",
            "awsRegion": "zonegroup1",
            "eventTime": "2019-11-22T13:47:35.124724Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "tester"},
            "requestParameters": {"sourceIPAddress": ""},
            "responseElements": {"x-amz-request-id": "503a4c37.5330.903595", "x-amz-id-2": "14d2-zone1"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "mynotif1",
                "bucket": {
                    "name": "xray-images",
                    "ownerIdentity": {"principalId": "tester"},
                    "arn": "arn:aws:s3:zonegroup1::xray-images",
                    "id": "503a4c37.5332.38",
                },
                "object": {
                    "key": "in/scan 1+2.dcm",  # Ceph does not URL-encode: '+' and ' ' are literal
                    "size": "1024",  # a string in Ceph's records
                    "eTag": "37b51d194a7513e45b56f6524f2d51f2",
                    "versionId": "",
                    "sequencer": "F7E6D75DC742D108",
                    "metadata": [{"key": "x-amz-meta-patient", "val": "p-17"}],
                    "tags": [],
                },
            },
            "eventId": "1575221657.102001.80dad3aad8584778352c68ea8cf3ea2b",
            "opaqueData": "me@example.com",
        }
    ]
}

MINIO = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "images/my photo(1).jpg",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2019-09-10T17:41:54Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "minio"},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {"name": "images", "ownerIdentity": {"principalId": "minio"}, "arn": "arn:aws:s3:::images"},
                "object": {
                    "key": "my+photo%281%29.jpg",
                    "size": 200436,
                    "eTag": "c5a58d3e2a5d3d6f4bde0ae24c4f4e9c",
                    "contentType": "image/jpeg",
                    "userMetadata": {"content-type": "image/jpeg", "X-Amz-Meta-Owner": "ana"},
                    "versionId": "1",
                    "sequencer": "15C3409F4C8F6B45",
                },
            },
            "source": {"host": "10.0.0.1", "port": "", "userAgent": "MinIO"},
        }
    ],
}

AWS = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "eu-west-1",
            "eventTime": "2024-03-01T10:00:00.000Z",
            "eventName": "s3:ObjectRemoved:Delete",
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "kawa-xray-images-0a1b2c3d",
                "bucket": {"name": "xray", "arn": "arn:aws:s3:::xray"},
                "object": {"key": "in%2Fimg1.dcm", "sequencer": "0055AED6DCD90281E5"},
            },
        }
    ]
}

AWS_TEST_EVENT = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-03-01T10:00:00.000Z", "Bucket": "xray"}


def only(events: list[S3Record]) -> S3Record:
    assert len(events) == 1
    return events[0]


def test_ceph_record() -> None:
    event = only(parse_records(CEPH))
    assert event.event_name == "ObjectCreated:Put" and event.is_created and not event.is_removed
    assert (event.bucket, event.key, event.size) == ("xray-images", "in/scan 1+2.dcm", 1024)
    assert event.etag == "37b51d194a7513e45b56f6524f2d51f2"
    assert event.sequencer == "F7E6D75DC742D108"
    assert event.version_id is None  # Ceph's "" means none
    assert event.metadata == {"patient": "p-17"}
    assert (event.source, event.region) == ("ceph:s3", "zonegroup1")
    assert event.event_id == "1575221657.102001.80dad3aad8584778352c68ea8cf3ea2b"
    assert event.opaque_data == "me@example.com"
    assert event.configuration_id == "mynotif1"
    assert event.time == datetime(2019, 11, 22, 13, 47, 35, 124724, tzinfo=UTC)


def test_minio_record() -> None:
    event = only(parse_records(json.dumps(MINIO).encode()))
    assert event.event_name == "ObjectCreated:Put"  # the s3: prefix is removed
    assert (event.bucket, event.key, event.size) == ("images", "my photo(1).jpg", 200436)  # URL-decoded
    assert event.version_id == "1"
    assert event.metadata == {"owner": "ana"}


def test_aws_record_url_encoded_key_and_delete() -> None:
    event = only(parse_records(json.dumps(AWS)))
    assert event.event_name == "ObjectRemoved:Delete" and event.is_removed
    assert event.key == "in/img1.dcm"
    assert (event.size, event.etag) == (0, None)
    assert event.region == "eu-west-1"


def test_aws_test_event_is_ignored() -> None:
    assert parse_records(AWS_TEST_EVENT) == []
    assert parse_records({"Type": "Notification", "Message": json.dumps(AWS_TEST_EVENT)}) == []


def test_sns_envelope() -> None:
    envelope = {"Type": "Notification", "MessageId": "m1", "TopicArn": "arn:aws:sns:::t", "Message": json.dumps(AWS)}
    assert only(parse_records(envelope)).key == "in/img1.dcm"


def test_cloudevent_object_and_kawa_log_record() -> None:
    record = make_record(
        "ObjectCreated:Copy", "xray", "a b+c.dcm", size=5, etag="e", sequencer="0A", region="r1",
        configuration_id="kawa-t-00000000", metadata={"k": "v"},
    )
    event = to_cloudevent(record)
    assert event.get_type() == "com.amazonaws.s3.ObjectCreated:Copy"
    assert event.get_source() == "kawa:s3.r1.xray"
    assert event.get_subject() == "a b+c.dcm"
    parsed = only(parse_records(event))
    assert (parsed.key, parsed.size, parsed.metadata) == ("a b+c.dcm", 5, {"k": "v"})
    _, value, headers = to_kafka(event)
    log_record = Record("t", 0, 0, b"xray/a b+c.dcm", value, tuple(headers))
    assert only(parse_records(log_record)) == parsed


def test_raw_ceph_json_on_kafka_without_cloudevent_headers() -> None:
    record = Record("xray-images", 0, 7, None, json.dumps(CEPH).encode())
    assert only(parse_records(record)).key == "in/scan 1+2.dcm"


@pytest.mark.parametrize("encoding", ["object", "string", "base64"])
def test_knative_kafkasource_delivery(encoding: str) -> None:
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "type": "dev.knative.kafka.event",
        "source": "/apis/v1/namespaces/default/kafkasources/xray-source#xray-images",
        "id": "partition:0/offset:5",
        "subject": "partition:0#5",
        "key": "xray-images/in/scan 1+2.dcm",
        "datacontenttype": "application/json",
    }
    if encoding == "object":
        envelope["data"] = CEPH
    elif encoding == "string":
        envelope["data"] = json.dumps(CEPH)
    else:
        envelope["data_base64"] = base64.b64encode(json.dumps(CEPH).encode()).decode()
    assert only(parse_records(envelope)).key == "in/scan 1+2.dcm"


def test_knative_binary_mode_cloudevent_with_kawa_event_inside() -> None:
    inner = to_cloudevent(make_record("ObjectCreated:Put", "xray", "k", size=1, etag="e", sequencer="01",
                                      region="r", configuration_id="c"))
    _, value, _ = to_kafka(inner)
    # A KafkaSource forwards the Kafka value (Kawa's S3 JSON) as the data of its own event.
    outer = new_event("dev.knative.kafka.event", "/kafkasources/s#t", value, datacontenttype="application/json",
                      id="partition:0/offset:1")
    assert only(parse_records(outer)).key == "k"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        ("{nope", "not JSON"),
        ({"hello": "world"}, "not an S3 bucket notification"),
        ({"Records": "x"}, "must be a list"),
        ({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {}}}]}, "lacks"),
        ({"Records": [{"eventName": "x", "s3": {"bucket": {"name": "b"}, "object": {"key": "k", "size": "big"}}}]},
         "non-numeric size"),
        (42, "must be a JSON object"),
    ],
)
def test_bad_payloads(payload: Any, message: str) -> None:
    with pytest.raises(EventError, match=message):
        parse_records(payload)


def _event(key: str, sequencer: str | None, name: str = "ObjectCreated:Put") -> S3Record:
    return S3Record(name, "b", key, sequencer=sequencer)


def test_sequencer_compares_as_padded_hex() -> None:
    assert sequencer_value("0055AED6DCD90281E5") < sequencer_value("55AED6DCD90281E6")
    assert sequencer_value("FF") > sequencer_value("0A")  # as strings "0A" < "FF" too, but "FF" < "100":
    assert sequencer_value("100") > sequencer_value("FF")
    assert sequencer_value(None) == sequencer_value("not-hex") == -1


def test_order_and_dedupe_by_sequencer() -> None:
    put1, put2, delete = _event("k", "0A"), _event("k", "1B"), _event("k", "100", "ObjectRemoved:Delete")
    other = _event("j", "05")
    assert order_events([delete, put2, other, put1]) == [other, put1, put2, delete]
    assert latest_per_object([put2, delete, put1])[("b", "k")] == delete
    tracker = SequencerTracker()
    accepted = [e for e in [put1, put2, put1, delete, put2, other] if tracker.accept(e)]
    assert accepted == [put1, put2, delete, other]  # the redelivered put1 and the stale put2 are dropped
    assert tracker.accept(_event("k", None))  # no sequencer: nothing to order by


def test_an_s3_event_of_several_records_unwraps_into_one_event_each() -> None:
    records = [ceph_record("b", "one.png"), ceph_record("b", "two.png")]
    event = new_event("com.amazonaws.s3.ObjectCreated:Put", "ceph:s3.default.b", {"Records": records}, id="n1")
    parts = unwrap(event)
    assert [p.get_id() for p in parts] == ["n1#0", "n1#1"]
    assert [p.get_subject() for p in parts] == ["one.png", "two.png"]
    assert [[r.key for r in parse_records(p)] for p in parts] == [["one.png"], ["two.png"]]
    raw = from_raw_value(json.dumps({"Records": records}).encode())
    assert len({e.get_id() for e in raw}) == 2 and [e.get_subject() for e in raw] == ["one.png", "two.png"]
    assert from_raw_value(b'{"Event": "s3:TestEvent"}') == []
