"""The X-ray pipeline on the distributed shape: Apache Kafka log, S3 store (moto_server, notifications
through SQS and Kawa's bridge), the ``risk-assessment`` function in two ``kawa worker`` processes.

The app is configured the way a user deploys it: a ``kawa.yaml`` with the backends, an ``xray.yaml`` with
the app's settings and a three-line module that builds the app from them (``kawa worker --app xraydist:app``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kawa.apps.xray.generator import Generator
from kawa.apps.xray.pipeline import processed_key
from kawa.apps.xray.settings import XraySettings, load_settings
from kawa.apps.xray.stack import XrayStack
from kawa.config import load_config
from kawa.events import from_record

from .conftest import TrainedModel
from .xray_checks import contains_phi, dicom_phi, read_topic, record_text, stop_processes, text_max, upload_batch

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

KAWA = str(Path(sys.executable).parent / "kawa")
FORMATS = ["png"] * 4 + ["dicom"] * 3 + ["jpeg"]
N = len(FORMATS)
APP = """
from kawa.apps.xray.pipeline import build_app
from kawa.apps.xray.settings import load_settings

app = build_app(load_settings("xray.yaml"))
"""


@pytest.fixture
def deployment(tmp_path: Path, kafka_bootstrap: str, s3_server: object, trained_model: TrainedModel) -> Path:
    """``kawa.yaml``, ``xray.yaml`` and ``xraydist.py`` in ``tmp_path``; names unique on the shared servers."""
    tag = f"xr{uuid.uuid4().hex[:8]}"
    config = {
        "home": str(tmp_path / ".kawa"),
        "log": {"uri": f"kafka://{kafka_bootstrap}"},
        "store": s3_server.store_settings(),  # type: ignore[attr-defined]
        "ml": {"tracking_uri": trained_model.tracking_uri, "artifact_root": trained_model.artifact_root},
    }
    settings = {
        "incoming_bucket": f"{tag}-images",
        "processed_bucket": f"{tag}-processed",
        "anonymized_bucket": f"{tag}-anonymized",
        "images_topic": f"{tag}-images",
        "results_topic": f"{tag}-results",
        "dead_letter_topic": f"{tag}-images.dlq",
        "deid_dead_letter_topic": f"{tag}-deid.dlq",
        "partitions": 4,
        "seed": 17,
        "results_db": f"sqlite:///{tmp_path / 'results.db'}",
    }
    (tmp_path / "kawa.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "xray.yaml").write_text(yaml.safe_dump({"xray": settings}))
    (tmp_path / "xraydist.py").write_text(APP)
    return tmp_path


@pytest.fixture
def workers(deployment: Path) -> Iterator[list[subprocess.Popen[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAWA_") or k.startswith("KAWA_TEST_")}
    procs = [
        subprocess.Popen(
            [KAWA, "worker", "--app", "xraydist:app", "--session-timeout-ms", "6000"],
            cwd=deployment,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(deployment / f"worker-{i}.err", "w"),  # noqa: SIM115 - closed with the process
            text=True,
        )
        for i in range(2)
    ]
    try:
        yield procs
    finally:
        stop_processes(procs)


def _wait_ready(deployment: Path, procs: list[subprocess.Popen[str]], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    logs = [deployment / f"worker-{i}.err" for i in range(len(procs))]
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                pytest.fail(f"kawa worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if all("kawa worker ready" in log.read_text() for log in logs):
            return
        time.sleep(0.2)
    pytest.fail("kawa workers not ready:\n" + "\n".join(log.read_text()[-1500:] for log in logs))


def test_distributed_shape_end_to_end(deployment: Path, workers: list[subprocess.Popen[str]]) -> None:
    from kawa.store.service import build_service

    config = load_config(deployment / "kawa.yaml", env={})
    settings: XraySettings = load_settings(deployment / "xray.yaml")
    stack = XrayStack(config, settings, host=False)  # the functions run in the kawa workers
    bridge = None
    try:
        stack.start()  # buckets and SQS notification on moto, topics on Kafka, the de-identification route
        bridge = build_service(stack.platform)  # SQS → Kafka, as `kawa up` runs it
        assert bridge is not None
        bridge.start()
        _wait_ready(deployment, workers)
        batch = upload_batch(Generator(settings, store=stack.store, seed=17), FORMATS)
        counts = stack.wait_until(
            lambda c: c.results >= N and c.anonymized >= N and c.dead_lettered >= 2 and c.deid_dead_lettered >= 2,
            timeout=180,
            poll_s=0.5,
        )
        assert (counts.uploaded, counts.processed, counts.results, counts.anonymized) == (N + 2, N, N, N), counts
        # Each damaged upload is dead-lettered by the function and by the route (a replay may repeat one).
        bad = {u.key for u in batch.corrupt}
        for topic in (settings.dead_letter_topic, settings.deid_dead_letter_topic):
            texts = [record_text(r) for r in read_topic(stack.log, topic, 2)]
            assert all(any(k in t for k in bad) for t in texts) and all(any(k in t for t in texts) for k in bad)

        rows = stack.results.rows()
        assert sorted(r.object_key for r in rows) == sorted(u.key for u in batch.images)
        assert all(r.label == settings.label_for(r.risk) and r.model_version == 1 for r in rows)
        # At-least-once: a rebalance while the second worker joins can replay events; a replayed reply keeps
        # its id (derived from the input event), so consumers deduplicate by source + id.
        events = [from_record(r) for r in read_topic(stack.log, settings.results_topic, N)]
        assert len({(e.get_source(), e.get_id()) for e in events}) == N
        assert {e.get_data()["key"] for e in events} == {u.key for u in batch.images}  # type: ignore[index]

        phi = batch.phi
        for upload in batch.images:
            with stack.store.get(settings.processed_bucket, processed_key(upload.key)) as reader:
                processed = reader.read()
            with stack.store.get(settings.incoming_bucket, upload.key) as reader:
                original = reader.read()
            assert contains_phi(processed, phi) == [] and text_max(original, processed) == 0.0
            with stack.store.get(settings.anonymized_bucket, upload.key) as reader:
                anonymized = reader.read()
            own = batch.phi_for(upload)  # a shifted date may land on another patient's date
            assert contains_phi(anonymized, own) == []
            assert text_max(original, anonymized) <= (0.15 if upload.fmt == "jpeg" else 0.0)
            if upload.fmt == "dicom":
                assert dicom_phi(anonymized, own) == []
        for topic in (settings.dead_letter_topic, settings.deid_dead_letter_topic):
            for record in read_topic(stack.log, topic, 2):
                assert contains_phi(record_text(record), phi) == []
    finally:
        if bridge is not None:
            bridge.stop()
        stack.stop()
