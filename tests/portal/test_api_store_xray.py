"""Buckets and objects (PHI policy, paging, upload that notifies, thumbnails of PNG and DICOM), the X-ray
board and the results through the API."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest

from kawa.events import from_record, new_event, to_kafka
from kawa.log.base import TopicSpec
from kawa.portal.permissions import Role
from tests.portal.conftest import bearer


def radiograph(seed: int = 1) -> Any:
    from kawa.apps.xray.synth import RadiographGenerator

    return RadiographGenerator(seed, size=128).generate()


def test_buckets_objects_and_upload_notifications(client: Any, admin: dict[str, str], platform: Any) -> None:
    from kawa.store import NotificationRule

    store = platform.store
    store.create_bucket("inbox")
    platform.log.create_topic(TopicSpec("inbox-events"))
    store.add_notification(NotificationRule(bucket="inbox", topic="inbox-events", suffix=".txt"))
    for i in range(5):
        store.put("inbox", f"k{i}.txt", f"v{i}".encode(), content_type="text/plain", metadata={"n": str(i)})
    buckets = client.get("/api/buckets", headers=admin).json()["items"]
    assert buckets == [{"name": "inbox", "phi_free": False, "notifications": [
        {"topic": "inbox-events", "events": ["ObjectCreated:*"], "prefix": None, "suffix": ".txt", "regex": None}]}]
    page = client.get("/api/buckets/inbox/objects?limit=2", headers=admin).json()
    assert [o["key"] for o in page["objects"]] == ["k0.txt", "k1.txt"] and page["next_start_after"] == "k1.txt"
    page = client.get("/api/buckets/inbox/objects?limit=10&start_after=k1.txt", headers=admin).json()
    assert [o["key"] for o in page["objects"]] == ["k2.txt", "k3.txt", "k4.txt"] and page["next_start_after"] is None
    assert page["objects"][0]["metadata"] == {"n": "2"} and page["objects"][0]["size"] == 2
    content = client.get("/api/buckets/inbox/objects/k3.txt", headers=admin)
    assert content.content == b"v3" and content.headers["etag"].strip('"') == page["objects"][1]["etag"]
    uploaded = client.put("/api/buckets/inbox/objects/new/upload.txt", content=b"hello", headers={
        **admin, "content-type": "text/plain"})
    assert uploaded.status_code == 201 and uploaded.json()["size"] == 5
    assert client.get("/api/buckets/inbox/objects/new/upload.txt", headers=admin).content == b"hello"
    events = _keys_on(platform, "inbox-events")
    assert events == ["k0.txt", "k1.txt", "k2.txt", "k3.txt", "k4.txt", "new/upload.txt"]
    assert client.delete("/api/buckets/inbox/objects/new/upload.txt", headers=admin).status_code == 204
    assert client.get("/api/buckets/inbox/objects/new/upload.txt", headers=admin).status_code == 404
    assert client.get("/api/buckets/nowhere/objects", headers=admin).status_code == 404
    assert client.put("/api/buckets/inbox/objects/..%2Fescape", content=b"x", headers=admin).status_code == 422


def test_thumbnails_of_png_dicom_and_refusals(client: Any, admin: dict[str, str], platform: Any) -> None:
    from PIL import Image

    image = radiograph()
    store = platform.store
    store.create_bucket("imgs")
    store.put("imgs", "a.png", image.png(), content_type="image/png")
    store.put("imgs", "a.dcm", image.dicom(), content_type="application/dicom")
    store.put("imgs", "notes.txt", b"not an image", content_type="text/plain")
    for key in ("a.png", "a.dcm"):
        response = client.get(f"/api/thumbnails/imgs/{key}?size=64", headers=admin)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        thumb = Image.open(io.BytesIO(response.content))
        assert max(thumb.size) == 64
        assert 40 < np.asarray(thumb.convert("L")).mean() < 230  # a picture, not a blank square
    refused = client.get("/api/thumbnails/imgs/notes.txt", headers=admin)
    assert refused.status_code == 415 and "not an image" in refused.text
    assert client.get("/api/thumbnails/imgs/missing.png", headers=admin).status_code == 404


@pytest.fixture
def xray(platform: Any) -> Any:
    from kawa.apps.xray.settings import XraySettings

    settings = XraySettings()
    store, log = platform.store, platform.log
    for bucket in settings.buckets():
        store.create_bucket(bucket)
    for topic in (settings.images_topic, settings.results_topic, settings.dead_letter_topic):
        log.create_topic(TopicSpec(topic))
    from kawa.apps.runtime import RunningApp
    from kawa.apps.xray.plugin import declare

    platform.apps["xray"] = RunningApp(declare(settings))
    return settings


def publish_results(platform: Any, settings: Any, rows: list[tuple[str, int, float]]) -> None:
    producer = platform.log.producer()
    for i, (label, version, risk) in enumerate(rows):
        data = {
            "bucket": settings.incoming_bucket, "key": f"scan-{i}.png", "processed_bucket": settings.processed_bucket,
            "processed_key": f"scan-{i}-processed.png", "model": "pneumonia", "model_version": version,
            "risk": risk, "label": label, "latency_ms": 10.0 + i, "time": time.time(),
        }
        key, value, headers = to_kafka(new_event("dev.kawa.xray.assessed", "/xray", data))
        producer.send(settings.results_topic, value, key=key, headers=headers)
    producer.close()


def test_board_is_not_configured_without_the_app(client: Any, admin: dict[str, str]) -> None:
    board = client.get("/api/xray/board", headers=admin).json()
    assert board["configured"] is False and "kawa demo xray" in board["reason"]
    assert client.get("/api/results", headers=admin).json()["configured"] is False
    assert client.get("/api/results/summary", headers=admin).status_code == 409


def test_board_counts_newest_and_results(
    client: Any, tokens: dict[Role, str], platform: Any, portal: Any, xray: Any
) -> None:
    store = platform.store
    image = radiograph().png()
    for i in range(12):
        store.put(xray.incoming_bucket, f"scan-{i:02d}.png", image, content_type="image/png")
        time.sleep(0.01)  # distinct modification times
    for i in range(3):
        store.put(xray.processed_bucket, f"scan-{i:02d}-processed.png", image, content_type="image/png")
    store.put(xray.anonymized_bucket, "scan-00.png", image, content_type="image/png")
    publish_results(platform, xray, [("Normal", 1, 0.1), ("Pneumonia", 1, 0.9), ("Normal", 2, 0.2)])
    portal.sampler.tick()

    engineer = client.get("/api/xray/board", headers=bearer(tokens[Role.DATA_ENGINEER])).json()
    assert engineer["counts"] == {"uploaded": 12, "processed": 3, "anonymized": 1, "dead_lettered": 0}
    assert [o["key"] for o in engineer["newest"]["uploaded"]] == [f"scan-{i:02d}.png" for i in range(11, 1, -1)]
    assert engineer["newest"]["processed"][0]["thumbnail"].startswith("/api/thumbnails/xray-images-processed/")
    assert engineer["by_version"] == {"pneumonia v1": 2, "pneumonia v2": 1}
    assert engineer["by_label"] == {"Normal": 2, "Pneumonia": 1}
    assert sum(bucket["count"] for bucket in engineer["timeline"]) == 3
    assert engineer["results"][0]["object"] == "scan-2.png"

    viewer = client.get("/api/xray/board", headers=bearer(tokens[Role.VIEWER])).json()
    assert viewer["counts"] == engineer["counts"]
    assert viewer["newest"]["uploaded"] == [] and viewer["phi_hidden"] is True
    assert len(viewer["newest"]["processed"]) == 3  # PHI-free: shown to everyone
    assert all(r["object"] is None for r in viewer["results"])
    thumb = client.get(viewer["newest"]["processed"][0]["thumbnail"], headers=bearer(tokens[Role.VIEWER]))
    assert thumb.status_code == 200
    assert client.get(engineer["newest"]["uploaded"][0]["thumbnail"], headers=bearer(tokens[Role.VIEWER])
                      ).status_code == 403

    results = client.get("/api/results?limit=2", headers=bearer(tokens[Role.VIEWER])).json()
    assert [r["label"] for r in results["items"]] == ["Normal", "Pneumonia"] and results["items"][0]["object"] is None
    summary = client.get("/api/results/summary", headers=bearer(tokens[Role.VIEWER])).json()
    assert summary == {"total": 3, "by_label": {"Normal": 2, "Pneumonia": 1},
                       "by_version": {"pneumonia v1": 2, "pneumonia v2": 1}}


def _keys_on(platform: Any, topic: str) -> list[str]:
    consumer = platform.log.consumer(f"t-{time.time_ns()}", [topic])
    keys: list[str] = []
    try:
        for _ in range(20):
            batch = consumer.poll(timeout=0.2)
            keys.extend(str(from_record(r).get_subject()) for r in batch)
            if not batch and keys:
                break
    finally:
        consumer.close()
    return sorted(keys)
