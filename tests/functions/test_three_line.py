"""The promise of the functions issue: a three-line function registered with the decorator runs on every new
object in a bucket under ``kawa up``; the same file runs under ``kawa worker`` against Apache Kafka and under
``kawa serve-function`` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kawa.config import load_config
from kawa.log import open_log
from kawa.store import open_store
from tests.functions.conftest import wait_for
from tests.functions.test_http import CEPH_RECORD, _free_port, _ready, post

pytestmark = pytest.mark.timeout(120)

KAWA = str(Path(sys.executable).parent / "kawa")

THREE_LINES = '''
import kawa

app = kawa.App("demo")


@app.function(bucket="{bucket}")
def on_scan(event, ctx):
    ctx.store.put("seen", event.get_subject(), b"seen by " + event.get_type().encode())
'''


def _seen(store: object, keys: list[str]) -> bool:
    return sorted(o.key for o in store.list_objects("seen").objects) == sorted(keys)  # type: ignore[attr-defined]


def test_three_lines_run_under_kawa_up_for_every_new_object(tmp_path: Path) -> None:
    (tmp_path / "threeline.py").write_text(THREE_LINES.format(bucket="scans"))
    config = load_config()
    log = open_log("embedded:", config)
    store = open_store("file:", config, log=log)
    store.create_bucket("seen")
    up = subprocess.Popen(
        [KAWA, "up", "--app", "threeline:app"], cwd=tmp_path, stdout=open(tmp_path / "up.out", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT, env={**os.environ, "KAWA_PORTAL__PORT": "0"},  # any free port for the portal
    )
    try:
        wait_for(lambda: "kawa up" in (tmp_path / "up.out").read_text() or up.poll() is not None, timeout=60)
        assert up.poll() is None, (tmp_path / "up.out").read_text()[-3000:]
        assert store.notifications("scans"), "the bucket trigger wired the bucket's notifications"
        for name in ("a.dcm", "b.dcm", "c/d.dcm"):
            store.put("scans", name, b"DICM...")
        wait_for(lambda: _seen(store, ["a.dcm", "b.dcm", "c/d.dcm"]), timeout=30, interval=0.05)
        with store.get("seen", "c/d.dcm") as reader:
            assert reader.read() == b"seen by com.amazonaws.s3.ObjectCreated:Put"
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        store.close()
        log.close()
    assert code == 0, (tmp_path / "up.out").read_text()[-3000:]


@pytest.mark.kafka
def test_the_same_file_runs_under_kawa_worker_against_kafka(kafka_bootstrap: str, tmp_path: Path) -> None:
    bucket = f"scans-{uuid.uuid4().hex[:8]}"  # the topic is named like the bucket: unique on a shared broker
    (tmp_path / "threeline.py").write_text(THREE_LINES.format(bucket=bucket))
    uri = f"kafka://{kafka_bootstrap}"
    config = load_config()
    log = open_log(uri, config)
    store = open_store("file:", config, log=log)
    store.create_bucket("seen")
    worker = subprocess.Popen(
        [KAWA, "--log", uri, "worker", "--app", "threeline:app", "--session-timeout-ms", "3000"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.err", "w"),  # noqa: SIM115
    )
    try:
        wait_for(lambda: "kawa worker ready" in (tmp_path / "worker.err").read_text(), timeout=60, interval=0.05)
        for name in ("x.dcm", "y.dcm"):
            store.put(bucket, name, b"DICM...")
        wait_for(lambda: _seen(store, ["x.dcm", "y.dcm"]), timeout=60, interval=0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        store.close()
        log.close()
    assert code == 0, (tmp_path / "worker.err").read_text()[-3000:]


def test_the_same_file_runs_under_kawa_serve_function_over_http(tmp_path: Path) -> None:
    (tmp_path / "threeline.py").write_text(THREE_LINES.format(bucket="scans"))
    store = open_store("file:", load_config())
    store.create_bucket("seen")
    port = _free_port()
    server = subprocess.Popen(
        [KAWA, "serve-function", "threeline:app", "on-scan", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env={**os.environ}, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.err", "w"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    record = {**CEPH_RECORD, "s3": {**CEPH_RECORD["s3"], "bucket": {"name": "scans"}}}  # type: ignore[dict-item]
    try:
        wait_for(lambda: _ready(url), timeout=30, interval=0.05)
        status, _h, body = post(url, json.dumps({"Records": [record]}).encode(), {
            "ce-specversion": "1.0", "ce-id": "partition:3/offset:7", "ce-type": "dev.knative.kafka.event",
            "ce-source": "/apis/v1/namespaces/default/kafkasources/demo-on-scan#scans",
            "ce-subject": "partition:3#7", "content-type": "application/json",
        })
        assert status == 202, body
        assert _seen(store, ["in/img1.dcm"])
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(20)
        store.close()
    assert code == 0, (tmp_path / "serve.err").read_text()[-3000:]
