"""Ceph RGW's Kafka notifications, written by hand (no Kawa code) and sent with a plain confluent-kafka
Producer — what a Ceph topic shared by several buckets carries."""

from __future__ import annotations

import json
from typing import Any

_SEQ = [0x17E6A4B2C3D40000]


def ceph_record(bucket: str, key: str, *, size: int = 3, etag: str = "0cc175b9c0f1b6a8") -> dict[str, Any]:
    """One record in RGW's layout (eventName without ``s3:``, a hex sequencer, metadata as a list)."""
    _SEQ[0] += 1
    return {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "default",
        "eventTime": "2026-12-01T22:00:00.000000Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "uploader"},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {"x-amz-request-id": "a1b2.4137.1", "x-amz-id-2": "4137-default-default"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "kawa-notify",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "uploader"}, "arn": f"arn:aws:s3:::{bucket}",
                       "id": "c8a1.4137.1"},
            "object": {"key": key, "size": size, "eTag": etag, "versionId": "", "sequencer": f"{_SEQ[0]:016X}",
                       "metadata": [], "tags": []},
        },
        "eventId": f"1764626400.000000.{etag}",
        "opaqueData": "",
    }


def send(bootstrap: str, topic: str, *records: dict[str, Any]) -> None:
    """One Kafka message holding ``records`` (Ceph sends one; others batch), no headers, as RGW does."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, json.dumps({"Records": list(records)}).encode())
    assert producer.flush(30) == 0, "the broker did not take the notification"
