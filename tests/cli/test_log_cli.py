"""The event log from the shell, as a user types it: embedded and Apache Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

KAWA = [sys.executable, "-m", "kawa.cli"]


def kawa(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KAWA, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


@pytest.fixture(params=["embedded", "kafka"])
def log_args(request: pytest.FixtureRequest) -> list[str]:
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        return ["--log", f"kafka://{bootstrap}"]
    return []


def test_echo_hi_then_consume_prints_hi(log_args: list[str]) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    produced = kawa(*log_args, "produce", topic, stdin="hi\n")
    assert produced.returncode == 0, produced.stderr
    consumed = kawa(*log_args, "consume", topic, "--group", "g", "--from-beginning", "--max", "1")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout == "hi\n"
    # The group committed what it printed: nothing is left to read.
    lag = kawa(*log_args, "lag", "--group", "g", "--topic", topic)
    assert lag.returncode == 0, lag.stderr
    assert "total lag: 0" in lag.stdout


def test_topics_commands_and_clear_errors(tmp_path: Path) -> None:
    created = kawa("topics", "create", "orders", "--partitions", "3")
    assert created.returncode == 0, created.stderr
    assert "orders" in kawa("topics", "list").stdout
    described = kawa("topics", "describe", "orders")
    assert "partitions=3" in described.stdout
    again = kawa("topics", "create", "orders")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = kawa("topics", "create", "bad", "--partitions", "0")
    assert bad.returncode == 1 and "partitions must be a positive integer" in bad.stderr
    missing = kawa("topics", "describe", "nope")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    unknown = kawa("--log", "zookeeper://x", "topics", "list")
    assert unknown.returncode == 1 and "known schemes" in unknown.stderr and "kafka:" in unknown.stderr
    assert kawa("topics", "delete", "orders").returncode == 0
    assert "orders" not in kawa("topics", "list").stdout


def test_produce_with_key_and_consume_from_time_full_view() -> None:
    assert kawa("produce", "keyed", "--key", "user-1", stdin="a\nb\n").returncode == 0
    out = kawa(
        "consume", "keyed", "--group", "g2", "--from-time", "2000-01-01T00:00:00Z", "--max", "2", "--show", "full"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["user-1", "user-1"]
    assert [line.split("\t")[-1] for line in lines] == ["a", "b"]


def test_kawa_help_is_fast_and_light() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); sys.argv=['kawa','--help']\n"
        "from kawa.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('mlflow','sklearn','boto3','confluent_kafka','onnxruntime','fastapi','pydicom') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "produce" in out.stdout and "topics" in out.stdout
