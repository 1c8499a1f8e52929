"""``kawa demo xray`` as a user runs it: a fresh directory, nothing prepared, then a second run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

KAWA = str(Path(sys.executable).parent / "kawa")

pytestmark = pytest.mark.timeout(420)


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's bare environment; PYTHONPATH passes through, so a checkout's sources are the ones that run."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "COLUMNS": "120", **extra}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def demo(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [KAWA, "demo", "xray", "--rate", "15", "--train-images", "200", "--no-portal", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env=user_env(cwd),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return " ".join(done.stdout.split())  # the terminal width wraps lines


def test_demo_is_listed_for_scripts_demo_sh() -> None:
    out = subprocess.run([KAWA, "demo", "--help"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^\W*xray\s", out, re.MULTILINE), out


def test_fresh_run_trains_uploads_and_agrees_then_reruns_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    first = demo(tmp_path, "--duration", "4")
    assert "no model at pneumonia@champion" in first and "trained pneumonia v1" in first, first
    assert "promoted to champion" in first, first
    assert "✓ counts agree" in first, first
    uploaded = int(re.search(r"uploaded │ (\d+) objects", first).group(1))  # type: ignore[union-attr]
    assert uploaded >= 1, first
    assert_rate_reported(first, asked=15)  # 4 s at 15/s, or it says why it fell short (a busy machine)
    assert (tmp_path / ".kawa" / "xray" / "results.db").exists()

    # Every upload damaged: at least one, however few a busy machine manages in 2 s.
    second = demo(tmp_path, "--duration", "2", "--corrupt", "1")
    assert "model pneumonia@champion → version 1" in second and "trained" not in second, second
    assert "✓ counts agree" in second, second  # counted for this run only, though the buckets hold both
    damaged = int(re.search(r"\((\d+) images, (\d+) damaged\)", second).group(2))  # type: ignore[union-attr]
    assert damaged >= 1, second
    third = interrupted(tmp_path, signal.SIGINT)
    assert "✓ counts agree" in third, third  # Ctrl-C: uploads stop, in-flight images finish, summary agrees
    assert_counts_consistent(third)

    # Far more than this machine can generate: the demo says what it reached, and why not more.
    flooded = demo(tmp_path, "--duration", "3", "--rate", "5000")
    assert "/s of the 5000/s asked: generating and storing one image takes" in flooded, flooded
    assert "(ask for less with --rate)" in flooded, flooded
    assert_rate_reported(flooded, asked=5000)
    assert "✓ counts agree" in flooded, flooded


def assert_rate_reported(out: str, asked: float) -> None:
    """The summary gives the upload rate reached; well short of the rate asked, the demo says why."""
    found = re.search(rf"upload rate │ ([\d.]+) images/s of the {asked:g}/s asked", out)
    assert found is not None, out
    if float(found.group(1)) < 0.9 * asked:
        assert f"/s of the {asked:g}/s asked: generating and storing one image takes" in out, out
        assert "(short: see above)" in out, out


def assert_counts_consistent(summary: str) -> None:
    """Processed never exceeds uploaded, and every processed image has its result row."""
    uploaded = int(re.search(r"uploaded │ (\d+) objects", summary).group(1))  # type: ignore[union-attr]
    found = re.search(r"processed │ (\d+) annotated PHI-free images, (\d+) result rows", summary)
    assert found is not None, summary
    processed, rows = int(found.group(1)), int(found.group(2))
    assert processed <= uploaded and processed == rows, summary


def interrupted(cwd: Path, sig: signal.Signals) -> str:
    """Run the demo without a duration and stop it with ``sig`` once it is uploading."""
    proc = subprocess.Popen(
        [KAWA, "demo", "xray", "--rate", "15", "--no-portal"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=user_env(cwd, PYTHONUNBUFFERED="1"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "uploading to" in line:
            break
    time.sleep(3)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + out
    return " ".join(("".join(lines) + out).split())


def test_dead_letters_count_distinct_event_ids_since_the_start(tmp_path: Path) -> None:
    """The summary's dead-letter count: a dead letter delivered twice (same CloudEvent id) counts once, and
    what the topic held before the run does not count."""
    from kawa.apps.xray.stack import DeadLetters
    from kawa.config import load_config
    from kawa.log import TopicSpec, open_log

    config = load_config(None, env={}, home=str(tmp_path / ".kawa"))
    log = open_log(f"embedded:{tmp_path / 'log'}", config)
    log.create_topic(TopicSpec("xray-images.dlq", partitions=2))
    producer = log.producer()

    def dead_letter(event_id: str) -> None:
        producer.produce("xray-images.dlq", b"{}", key=event_id.encode(), headers=[("ce_id", event_id.encode())])
        producer.flush()

    dead_letter("from-an-earlier-run")
    reader = DeadLetters(log, "xray-images.dlq")
    for event_id in ("a", "b", "a", "c", "b"):  # a and b redelivered
        dead_letter(event_id)
    assert settled(reader, 3) == 3
    everything = DeadLetters(log, "xray-images.dlq", since={})  # from the beginning: the earlier one too
    assert settled(everything, 4) == 4
    for opened in (reader, everything, log):
        opened.close()


def settled(reader: Any, expected: int, timeout: float = 30) -> int:
    """``reader.count()`` once it reaches ``expected`` (each call reads on) or the deadline passes."""
    deadline = time.monotonic() + timeout
    count = reader.count()
    while count != expected and time.monotonic() < deadline:
        count = reader.count()
    return int(count)
