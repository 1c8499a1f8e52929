"""``kawa.store.ingress``: Ceph RGW's HTTP deliveries appended to the log, answered only after the log's
acknowledgement (real HTTP, real Apache Kafka; the RGW itself is in test_ceph.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from kawa.config import KawaConfig
from kawa.events import from_record
from kawa.log import open_log
from kawa.store import parse_records
from kawa.store.ingress import BackgroundIngress, push_endpoint
from tests.fixtures.moto import free_port

from .ceph_helpers import TopicReader

pytestmark = pytest.mark.kafka


def ceph_body(bucket: str, key: str) -> bytes:
    """A delivery as Ceph 16.2's HTTP endpoint POSTs it (one record, Ceph's fields)."""
    record = {
        "eventVersion": "2.2", "eventSource": "ceph:s3", "awsRegion": "", "eventTime": "2026-12-02T13:38:01.809981Z",
        "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "kawa"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "kawa-t-1",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}", "id": "x.4119.3"},
               "object": {"key": key, "size": "5", "eTag": "5d41402abc4b2a76b9719d911017c592", "versionId": "",
                          "sequencer": "391F106B51F78C30", "metadata": [{"key": "x-amz-meta-patient", "val": "p1"}],
                          "tags": []}},
        "eventId": "1796218681.814544.5d41402abc4b2a76b9719d911017c592", "opaqueData": "kawa-t-1",
    }
    return json.dumps({"Records": [record]}).encode()


def post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def config(tmp_path: Path, log_uri: str) -> KawaConfig:
    return KawaConfig.model_validate({"home": str(tmp_path / ".kawa"), "log": {"uri": log_uri}})


def test_a_delivery_is_on_the_log_when_answered_200(tmp_path: Path, kafka_bootstrap: str) -> None:
    log = open_log(config=config(tmp_path, f"kafka://{kafka_bootstrap}"))
    topic = f"ingress-{uuid.uuid4().hex[:8]}"
    try:
        with BackgroundIngress(log) as server:
            status, answer = post(push_endpoint(server.url, topic), ceph_body("scans", "a b/ü.dcm"))
            assert (status, answer) == (200, {"published": 1})
            reader = TopicReader(log, topic)
            try:
                reader.wait_for_keys({"a b/ü.dcm"}, 30)  # acknowledged before the answer: it is there
            finally:
                reader.close()
            assert post(push_endpoint(server.url, topic), b"not json")[0] == 400
            assert post(push_endpoint(server.url, topic), b'{"Records": []}')[0] == 400
            assert post(push_endpoint(server.url, "bad%21topic"), ceph_body("scans", "x"))[0] == 400
    finally:
        log.close()
    event = parse_records(reader.records[0])[0]
    assert (event.size, event.metadata, event.opaque_data) == (5, {"patient": "p1"}, "kawa-t-1")  # size "5" read
    assert from_record(reader.records[0]).get_source() == "ceph:s3..scans"


def test_a_log_that_does_not_acknowledge_is_answered_503_so_the_rgw_retries(tmp_path: Path) -> None:
    log = open_log(config=config(tmp_path, f"kafka://127.0.0.1:{free_port()}"))  # nobody listens there
    try:
        with BackgroundIngress(log, publish_timeout_s=1.0) as server:
            status, answer = post(push_endpoint(server.url, "scans"), ceph_body("scans", "a.dcm"))
    finally:
        log.close()
    assert status == 503 and "scans" in str(answer["error"])
