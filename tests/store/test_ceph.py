"""Bucket notifications on a real Ceph RGW (Debian's 16.2.15): topic and notification made by Kawa's ``rgw``
mode, the RGW's HTTP push endpoint into ``kawa ingress`` (a real process), the log on Apache Kafka, and
uploads made with plain boto3. The tests share one bucket and topic: a new RGW topic's persistent queue is
picked up by the RGW only at its next queue-list pass (every 30 s), so each new topic costs up to 30 s."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kawa.config import KawaConfig
from kawa.events import from_record
from kawa.events.s3 import raw_records, record_event_id
from kawa.log import EventLog, open_log
from kawa.store import ObjectStore, open_store, parse_records
from kawa.store.rules import NotificationRule
from tests.fixtures.ceph import CephRgw

from .ceph_helpers import IngressProcess, TopicReader

pytestmark = [pytest.mark.kafka, pytest.mark.ceph, pytest.mark.xdist_group("ceph-rgw")]
FIRST_DELIVERY_S = 120  # the RGW takes up a new queue within 30 s; the shared machine is slow


@dataclass
class Pipeline:
    rgw: CephRgw
    store: ObjectStore
    log: EventLog
    ingress: IngressProcess
    rule: NotificationRule
    bucket: str
    topic: str

    def upload(self, key: str, body: bytes, **extra: Any) -> None:
        self.rgw.client().put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

    def reader(self) -> TopicReader:
        return TopicReader(self.log, self.topic)


@pytest.fixture(scope="module")
def pipeline(ceph_rgw: CephRgw, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    home = tmp_path_factory.mktemp("ceph")
    tag = uuid.uuid4().hex[:8]
    bucket, topic = f"ceph-{tag}", f"ceph-{tag}-events"
    ingress_log = home / "ingress.log"
    config_path = home / "kawa.yaml"
    ingress = IngressProcess(config_path, ingress_log)
    settings = {"home": str(home / ".kawa"), "log": {"uri": f"kafka://{kafka_bootstrap}"},
                "store": ceph_rgw.store_settings(ingress.url)}
    config_path.write_text(yaml.safe_dump(settings))
    config = KawaConfig.model_validate(settings)
    log = open_log(config=config)
    store = open_store("s3://", config, log=log)
    ingress.start()
    try:
        store.create_bucket(bucket)
        rule = store.add_notification(NotificationRule(bucket=bucket, topic=topic, suffix=".dcm"))
        yield Pipeline(ceph_rgw, store, log, ingress, rule, bucket, topic)
    finally:
        ingress.close()
        store.close()
        log.close()


def test_a_plain_upload_becomes_one_event_in_cephs_format(pipeline: Pipeline) -> None:
    assert pipeline.rule.mode == "rgw" and pipeline.rule.target == f"arn:aws:sns:default::{pipeline.topic}"
    body = b"DICM" * 1000
    reader = pipeline.reader()
    try:
        pipeline.upload("notes.txt", b"not a scan")  # the RGW applies the suffix filter: no event
        pipeline.upload("ward 3/scan ü.dcm", body, Metadata={"patient": "p-17"}, ContentType="application/dicom")
        reader.wait_for_keys({"ward 3/scan ü.dcm"}, FIRST_DELIVERY_S)
        reader.poll(2.0)
    finally:
        reader.close()
    assert set(reader.keys()) == {"ward 3/scan ü.dcm"}
    record = reader.records[0]
    raw = raw_records(record)[0]
    assert raw["eventSource"] == "ceph:s3" and raw["eventName"] == "ObjectCreated:Put"  # no s3: prefix
    assert raw["opaqueData"] == pipeline.rule.id and raw["eventId"]
    assert raw["s3"]["configurationId"] == pipeline.rule.id
    event = parse_records(record)[0]
    assert (event.bucket, event.key, event.size) == (pipeline.bucket, "ward 3/scan ü.dcm", len(body))
    assert event.etag == hashlib.md5(body).hexdigest() and event.metadata == {"patient": "p-17"}
    assert event.opaque_data == pipeline.rule.id and event.event_id == raw["eventId"] and event.sequencer
    cloud = from_record(record)  # the ingress wrapped it as every Kawa notification: a CloudEvent
    assert cloud.get_type() == "com.amazonaws.s3.ObjectCreated:Put" and cloud.get_id() == record_event_id(raw)
    assert pipeline.store.get(pipeline.bucket, "ward 3/scan ü.dcm").read() == body


def test_auto_mode_finds_the_rgw_by_its_sns_api(pipeline: Pipeline, tmp_path: Path) -> None:
    from kawa.store import s3_notify

    settings = {"home": str(tmp_path / ".kawa"), "log": {"uri": "memory:"},
                "store": pipeline.rgw.store_settings(pipeline.ingress.url, mode="auto")}
    store = open_store("s3://", KawaConfig.model_validate(settings))
    try:
        assert s3_notify.resolve_mode(store) == "rgw"  # type: ignore[arg-type]  # RGW answers SQS with 405
    finally:
        store.close()


def test_removing_a_buckets_last_rule_clears_its_notification_on_the_rgw(pipeline: Pipeline) -> None:
    bucket = f"{pipeline.bucket}-rm"
    pipeline.store.create_bucket(bucket)
    rule = pipeline.store.add_notification(NotificationRule(bucket=bucket, topic=pipeline.topic))
    client = pipeline.rgw.client()
    assert [c["Id"] for c in client.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]] == [
        rule.id
    ]
    pipeline.store.remove_notification(bucket, rule.id)  # RGW 16.2 refuses an empty configuration: Ceph's DELETE
    assert "TopicConfigurations" not in client.get_bucket_notification_configuration(Bucket=bucket)
    assert pipeline.store.notifications(bucket) == []


def test_nothing_is_lost_while_the_ingress_is_down_or_the_rgw_restarts(pipeline: Pipeline) -> None:
    reader = pipeline.reader()
    try:
        # The ingress is stopped (SIGTERM) while uploads continue: the RGW keeps them in its persistent queue.
        pipeline.ingress.stop()
        down = {f"down/{i}.dcm" for i in range(5)}
        for key in sorted(down):
            pipeline.upload(key, key.encode())
        reader.poll(2.0)
        assert not down & set(reader.keys()), "events arrived while the ingress was stopped"
        pipeline.ingress.start()
        reader.wait_for_keys(down, 60)
        # The ingress crashes (SIGKILL) in the middle of a stream of uploads, and comes back.
        crash = {f"crash/{i:02d}.dcm" for i in range(30)}
        for i, key in enumerate(sorted(crash)):
            pipeline.upload(key, key.encode())
            if i == 10:
                pipeline.ingress.kill()
        pipeline.ingress.start()
        reader.wait_for_keys(crash, 60)
        # The RGW is killed mid-run and restarted: queued deliveries survive in RADOS.
        before = {f"rgw/before-{i}.dcm" for i in range(5)}
        for key in sorted(before):
            pipeline.upload(key, key.encode())
        started = time.monotonic()
        pipeline.rgw.restart_gateway()
        after = {f"rgw/after-{i}.dcm" for i in range(5)}
        for key in sorted(after):
            pipeline.upload(key, key.encode())
        # A restarted RGW owns the queue again once the old instance's lock expired (90 s in Ceph 16.2).
        seen = reader.wait_for_keys(before | after, 240)
        print(f"all events after the RGW restart within {time.monotonic() - started:.0f} s")
    finally:
        reader.close()
    wanted = down | crash | before | after
    assert wanted <= set(seen)
    # At-least-once on the log, exactly once per object: a redelivery carries the same CloudEvent id.
    assert all(len(seen[key]) == 1 for key in wanted), {k: v for k, v in seen.items() if len(v) != 1}
