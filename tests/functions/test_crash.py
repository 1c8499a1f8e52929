"""Crash: a ``kawa worker`` process is killed with SIGKILL mid-batch; after a restart every event's side
effect exists exactly once.

The side effect is a row INSERTed into a SQLite table without any unique constraint, written through
``ctx.once("row", conn=db)`` — so only the runtime's deduplication stands between a redelivery and a
duplicate row. The kill lands while rows are being written and before the last offsets were committed,
so the restarted worker receives events whose effects already exist.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kawa.config import load_config
from kawa.log import open_log
from kawa.log.base import TopicSpec
from tests.functions.conftest import committed, events, produce, wait_for

pytestmark = pytest.mark.timeout(120)

N = 300
KAWA = str(Path(sys.executable).parent / "kawa")

APP = '''
import os, sqlite3, time
import kawa

app = kawa.App("crash")


@app.function(topic="jobs", concurrency=4, max_scale=2, min_scale=1, retries=2, backoff_s=0.01)
def work(event, ctx):
    with open(os.environ["CRASH_CALLS"], "a") as calls:
        calls.write(event.get_id() + "\\n")
    db = sqlite3.connect(os.environ["CRASH_DB"], timeout=30)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT)")
        with ctx.once("row", conn=db) as fresh:
            if fresh:
                db.execute("INSERT INTO effects VALUES (?)", (event.get_id(),))
                time.sleep(0.004)  # the effect takes a while: the kill can land inside it
    finally:
        db.close()
'''


def rows(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT event_id, COUNT(*) FROM effects GROUP BY event_id").fetchall()
    except sqlite3.OperationalError:  # the table is not there yet
        return []
    finally:
        conn.close()


def start_worker(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [KAWA, "--log", "embedded:", "worker", "--app", "crashapp:app", "--session-timeout-ms", "1500"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"{name}.err", "w"),
    )


def test_sigkill_mid_batch_then_restart_gives_every_effect_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crashapp.py").write_text(APP)
    db, calls = tmp_path / "effects.db", tmp_path / "calls.txt"
    monkeypatch.setenv("CRASH_DB", str(db))
    monkeypatch.setenv("CRASH_CALLS", str(calls))
    log = open_log("embedded:", load_config())
    log.create_topic(TopicSpec("jobs", partitions=2))
    produce(log, "jobs", events(N, source="/crash"))

    first = start_worker(tmp_path, "first")
    try:
        wait_for(lambda: len(rows(db)) >= N // 3, timeout=60, interval=0.005)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    done_at_kill = len(rows(db))
    committed_at_kill = sum(v or 0 for v in committed(log, "kawa-fn-crash-work", "jobs").values())
    assert 0 < done_at_kill < N, "the kill must land mid-batch"
    assert committed_at_kill < done_at_kill, "some finished events were not committed: they will come again"

    second = start_worker(tmp_path, "second")
    try:
        wait_for(lambda: len(rows(db)) == N, timeout=60, interval=0.05)
        wait_for(lambda: sum(v or 0 for v in committed(log, "kawa-fn-crash-work", "jobs").values()) == N, timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, (tmp_path / "second.err").read_text()[-3000:]
    log.close()

    counts = dict(rows(db))
    assert set(counts) == {f"e{i}" for i in range(N)}
    duplicated = {k: v for k, v in counts.items() if v != 1}
    assert not duplicated, f"side effects repeated: {duplicated}"
    invocations = calls.read_text().split()
    assert len(invocations) >= N
    print(f"rows at kill {done_at_kill}, committed at kill {committed_at_kill}, invocations {len(invocations)}")
