"""The store from the shell, run as a user runs it: `kawa` subprocesses in a fresh directory."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.moto import S3Server

KAWA = [sys.executable, "-m", "kawa.cli"]


def kawa(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KAWA, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def ok(*args: str) -> str:
    result = kawa(*args)
    assert result.returncode == 0, f"kawa {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_buckets_put_ls_get_rm(tmp_path: Path) -> None:
    ok("buckets", "create", "scans")
    assert "scans" in ok("buckets", "list").split()
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.dcm"
        path.write_bytes(os.urandom(1000 + i))
        files.append(path)
    out = ok("put", "scans", *map(str, files), "--prefix", "in/", "--meta", "site=b")
    assert "scans/in/f0.dcm" in out and "1000 bytes" in out
    assert ok("ls", "scans").split() == ["in/f0.dcm", "in/f1.dcm", "in/f2.dcm"]
    assert ok("ls", "scans", "--prefix", "in/f1").split() == ["in/f1.dcm"]
    long = ok("ls", "scans", "-l")
    assert hashlib.md5(files[2].read_bytes()).hexdigest() in long and "1002" in long
    ok("get", "scans", "in/f1.dcm", "-o", str(tmp_path / "back.dcm"))
    assert (tmp_path / "back.dcm").read_bytes() == files[1].read_bytes()
    streamed = subprocess.run([*KAWA, "get", "scans", "in/f2.dcm"], capture_output=True, timeout=180)
    assert streamed.returncode == 0 and streamed.stdout == files[2].read_bytes()
    # The bucket directory holds exactly the user's files.
    assert sorted(os.listdir(tmp_path / ".kawa" / "buckets" / "scans" / "in")) == ["f0.dcm", "f1.dcm", "f2.dcm"]
    ok("rm", "scans", "in/f0.dcm", "in/f1.dcm", "in/f2.dcm")
    assert ok("ls", "scans") == ""
    ok("buckets", "delete", "scans")
    assert "scans" not in ok("buckets", "list").split()


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = kawa("ls", "nope-bucket")
    assert missing.returncode == 1 and "bucket 'nope-bucket' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = kawa("buckets", "create", "Bad_Name")
    assert bad.returncode == 1 and "invalid bucket name" in bad.stderr
    ok("buckets", "create", "scans")
    absent = kawa("get", "scans", "absent.dcm")
    assert absent.returncode == 1 and "not found" in absent.stderr
    escape = kawa("rm", "scans", "../etc/passwd")
    assert escape.returncode == 1 and "could escape the bucket" in escape.stderr


def test_notify_add_list_remove(tmp_path: Path) -> None:
    out = ok("notify", "add", "xray", "--topic", "xray-images", "--suffix", ".dcm", "--prefix", "in/",
             "--events", "ObjectCreated:*", "--events", "ObjectRemoved:*")
    assert "created bucket xray" in out  # notify add creates a missing bucket
    assert "xray-images" in ok("topics", "list").split()  # and the topic, so consumers can start first
    listed = ok("notify", "list", "xray")
    assert "xray-images" in listed and "suffix=.dcm" in listed and "prefix=in/" in listed
    from kawa.store.rules import NotificationRule

    rule_id = NotificationRule("xray", "xray-images", events=("ObjectCreated:*", "ObjectRemoved:*"), prefix="in/",
                               suffix=".dcm").id
    ok("notify", "remove", "xray", rule_id)
    assert "xray-images" not in ok("notify", "list", "xray")
    refused = kawa("notify", "add", "other", "--topic", "t", "--no-create-bucket")
    assert refused.returncode == 1 and "does not exist" in refused.stderr
    bad = kawa("notify", "add", "xray", "--topic", "t", "--events", "ObjectCreated:Nope")
    assert bad.returncode == 1 and "unknown event type" in bad.stderr


def _start_up(tmp_path: Path, ready: str = "store-watcher") -> subprocess.Popen[str]:
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115  # closed with the process
    proc = subprocess.Popen([*KAWA, "up"], stdout=log, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 180  # kawa up imports its backends: slow on a busy machine
    while time.monotonic() < deadline:
        text = (tmp_path / "up.log").read_text()
        if ready in text and "Ctrl-C" in text:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"kawa up did not start:\n{(tmp_path / 'up.log').read_text()}")


def _stop(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text()


def test_done_when_cp_into_bucket_while_kawa_up_runs_prints_one_event(tmp_path: Path) -> None:
    """The issue's scenario, literally: notify add, kawa up, cp, kawa consume."""
    ok("notify", "add", "xray", "--topic", "xray-images", "--suffix", ".dcm")
    scan = tmp_path / "scan.dcm"
    scan.write_bytes(os.urandom(4096))
    up = _start_up(tmp_path)
    try:
        subprocess.run(["cp", str(scan), ".kawa/buckets/xray/"], check=True)
        subprocess.run(["cp", str(scan), ".kawa/buckets/xray/notes.txt"], check=True)  # filtered out
        consumed = kawa("consume", "xray-images", "--group", "g", "--from-beginning", "--max", "1", timeout=180)
        assert consumed.returncode == 0, consumed.stderr
        (line,) = consumed.stdout.splitlines()
        (record,) = json.loads(line)["Records"]
        assert record["eventName"] == "ObjectCreated:Put"
        assert record["s3"]["bucket"]["name"] == "xray"
        assert record["s3"]["object"]["key"] == "scan.dcm"
        assert record["s3"]["object"]["size"] == 4096
        assert record["s3"]["object"]["eTag"] == hashlib.md5(scan.read_bytes()).hexdigest()
        # Exactly one: nothing else arrives for the group.
        more = kawa("consume", "xray-images", "--group", "g", "--timeout", "2")
        assert more.returncode == 0 and more.stdout == ""
    finally:
        _stop(up, tmp_path)


def test_kawa_up_restart_notifies_files_copied_while_down_once(tmp_path: Path) -> None:
    ok("notify", "add", "xray", "--topic", "xray-images")
    (tmp_path / ".kawa" / "buckets" / "xray" / "while-down.dcm").write_bytes(b"down")
    time.sleep(1.1)  # older than settle_s when kawa up starts
    for _ in range(2):  # started twice: the file is notified by the first start only
        up = _start_up(tmp_path)
        time.sleep(1.5)
        _stop(up, tmp_path)
    consumed = kawa("consume", "xray-images", "--group", "g", "--from-beginning", "--timeout", "2")
    assert consumed.returncode == 0, consumed.stderr
    keys = [json.loads(line)["Records"][0]["s3"]["object"]["key"] for line in consumed.stdout.splitlines()]
    assert keys == ["while-down.dcm"]


def test_put_through_cli_notifies_without_kawa_up(tmp_path: Path) -> None:
    ok("notify", "add", "xray", "--topic", "xray-images")
    scan = tmp_path / "a.dcm"
    scan.write_bytes(b"abc")
    ok("put", "xray", str(scan))
    consumed = kawa("consume", "xray-images", "--group", "g", "--from-beginning", "--max", "1", timeout=180)
    assert json.loads(consumed.stdout)["Records"][0]["s3"]["object"]["key"] == "a.dcm"


def test_s3_store_through_kawa_up_and_the_sqs_bridge(tmp_path: Path, s3_server: S3Server) -> None:
    import uuid

    import yaml

    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    settings = s3_server.store_settings(queue_name=f"kawa-cli-{uuid.uuid4().hex[:8]}")
    (tmp_path / "kawa.yaml").write_text(yaml.safe_dump({"store": settings}))
    out = ok("notify", "add", bucket, "--topic", "s3-images", "--suffix", ".dcm")
    assert "mode sqs" in out
    up = _start_up(tmp_path, ready="store-bridge")
    try:
        s3_server.client().put_object(Bucket=bucket, Key="from boto3.dcm", Body=b"0123456789")
        consumed = kawa("consume", "s3-images", "--group", "g", "--from-beginning", "--max", "1", timeout=180)
        assert consumed.returncode == 0, consumed.stderr
        (record,) = json.loads(consumed.stdout)["Records"]
        assert record["s3"]["bucket"]["name"] == bucket
        assert record["s3"]["object"]["size"] == 10
        assert record["s3"]["object"]["eTag"] == hashlib.md5(b"0123456789").hexdigest()
    finally:
        _stop(up, tmp_path)
