"""The X-ray pipeline on the article's stack for real: ``store: s3://`` on a Ceph RGW (Debian's 16.2.15,
``scripts/ceph.sh``), bucket notifications as a persistent RGW topic whose HTTP push endpoint is
``kawa ingress``, the log on Apache Kafka, the ``risk-assessment`` function in a ``kawa worker`` process and
the de-identification route in a ``kawa routes run`` process. Scans are uploaded with plain boto3, not Kawa."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kawa.apps.xray.deid import ROUTE_ID, deid_route_yaml
from kawa.apps.xray.generator import Generator
from kawa.apps.xray.pipeline import processed_key
from kawa.apps.xray.settings import XraySettings, load_settings
from kawa.apps.xray.stack import XrayStack
from kawa.config import load_config
from kawa.events import from_record
from tests.fixtures.ceph import CephRgw
from tests.store.ceph_helpers import IngressProcess
from tests.waiting import wait_for

from .conftest import TrainedModel
from .test_xray_distributed import APP
from .xray_checks import contains_phi, read_topic, stop_processes, text_max, upload_batch

pytestmark = [pytest.mark.kafka, pytest.mark.ceph, pytest.mark.xdist_group("ceph-rgw"), pytest.mark.timeout(400)]

KAWA = str(Path(sys.executable).parent / "kawa")
FORMATS = ["png", "png", "dicom", "dicom", "jpeg"]
N = len(FORMATS)
ROOT = Path(__file__).resolve().parents[2]


class Boto3Scanner:
    """What a scanner does: a plain boto3 ``put_object`` to the RGW (the generator's ``store``)."""

    def __init__(self, rgw: CephRgw) -> None:
        self.client = rgw.client()

    def put(self, bucket: str, key: str, body: bytes, *, content_type: str) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


@pytest.fixture
def deployment(tmp_path: Path, kafka_bootstrap: str, ceph_rgw: CephRgw, trained_model: TrainedModel) -> Iterator[Any]:
    tag = f"xc{uuid.uuid4().hex[:8]}"
    ingress = IngressProcess(tmp_path / "kawa.yaml", tmp_path / "ingress.log")
    config = {
        "home": str(tmp_path / ".kawa"),
        "log": {"uri": f"kafka://{kafka_bootstrap}"},
        "store": ceph_rgw.store_settings(ingress.url),
        "ml": {"tracking_uri": trained_model.tracking_uri, "artifact_root": trained_model.artifact_root},
    }
    settings = {
        "incoming_bucket": f"{tag}-images", "processed_bucket": f"{tag}-processed",
        "anonymized_bucket": f"{tag}-anonymized", "images_topic": f"{tag}-images", "results_topic": f"{tag}-results",
        "dead_letter_topic": f"{tag}-images.dlq", "deid_dead_letter_topic": f"{tag}-deid.dlq",
        "partitions": 2, "seed": 23, "results_db": f"sqlite:///{tmp_path / 'results.db'}",
    }
    (tmp_path / "kawa.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "xray.yaml").write_text(yaml.safe_dump({"xray": settings}))
    (tmp_path / "xraydist.py").write_text(APP)
    ingress.start()
    try:
        yield tmp_path, ingress
    finally:
        ingress.close()


@pytest.fixture
def worker(deployment: tuple[Path, IngressProcess]) -> Iterator[list[subprocess.Popen[str]]]:
    """The function in a ``kawa worker`` and the de-identification route in a ``kawa routes run`` process."""
    path, _ = deployment
    (path / "routes.yaml").write_text(deid_route_yaml(load_settings(path / "xray.yaml")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAWA_") or k.startswith("KAWA_TEST_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    argvs = [[KAWA, "worker", "--app", "xraydist:app", "--session-timeout-ms", "6000"],
             [KAWA, "routes", "run", ROUTE_ID, "--file", "routes.yaml"]]  # fmt: skip
    procs = []
    for i, argv in enumerate(argvs):
        out = open(path / f"proc-{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(argv, cwd=path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True))
    try:
        yield procs
    finally:
        stop_processes(procs)


def _wait_ready(path: Path, procs: list[subprocess.Popen[str]], timeout: float = 120.0) -> None:
    marks = ("kawa worker ready", "running —")
    logs = [path / f"proc-{i}.log" for i in range(len(procs))]

    def ready() -> bool:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return all(mark in log.read_text() for mark, log in zip(marks, logs, strict=True))

    wait_for(ready, timeout)


def test_boto3_uploads_to_ceph_become_results_processed_and_anonymized_images_exactly_once(
    deployment: tuple[Path, IngressProcess], worker: list[subprocess.Popen[str]], ceph_rgw: CephRgw
) -> None:
    path, _ = deployment
    config = load_config(path / "kawa.yaml", env={})
    settings: XraySettings = load_settings(path / "xray.yaml")
    stack = XrayStack(config, settings, host=False, route=False)  # both run in their own processes
    try:
        stack.start()  # buckets on the RGW, its topic + notification (HTTP push to the ingress), Kafka topics
        assert [r.mode for r in stack.store.notifications(settings.incoming_bucket)] == ["rgw"]
        _wait_ready(path, worker)
        batch = upload_batch(Generator(settings, store=Boto3Scanner(ceph_rgw), seed=23), FORMATS)
        counts = stack.wait_until(  # the RGW takes up the new topic's queue within 30 s
            lambda c: c.results >= N and c.anonymized >= N and c.dead_lettered >= 2 and c.deid_dead_lettered >= 2,
            timeout=240, poll_s=0.5,
        )
        assert (counts.uploaded, counts.processed, counts.results, counts.anonymized) == (N + 2, N, N, N), counts
        rows = stack.results.rows()
        assert sorted(r.object_key for r in rows) == sorted(u.key for u in batch.images)  # one row per scan
        assert all(r.label == settings.label_for(r.risk) and r.model_version == 1 for r in rows)
        events = [from_record(r) for r in read_topic(stack.log, settings.results_topic, N)]
        assert len({(e.get_source(), e.get_id()) for e in events}) == N
        for upload in batch.images:
            with stack.store.get(settings.processed_bucket, processed_key(upload.key)) as reader:
                processed = reader.read()
            with stack.store.get(settings.incoming_bucket, upload.key) as reader:
                original = reader.read()
            assert contains_phi(processed, batch.phi) == [] and text_max(original, processed) == 0.0
            with stack.store.get(settings.anonymized_bucket, upload.key) as reader:
                anonymized = reader.read()
            assert contains_phi(anonymized, batch.phi_for(upload)) == []
    finally:
        stack.stop()
