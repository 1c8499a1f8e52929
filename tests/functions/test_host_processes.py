"""Process replicas in the embedded host: every event's effect exactly once under scale up and down and a
SIGKILLed replica, per-key order, drain on stop, metrics from the children.

The functions are module attributes, so the host's child processes import this module by name. Each effect
is a row written through ``ctx.once("row", conn=db)`` into a SQLite file that every process shares; the row
records the process that wrote it, so the tests see that the work ran in children, and in several.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kawa.config import KawaConfig
from kawa.errors import InvalidFunction
from kawa.events import CloudEvent, new_event
from kawa.functions.app import App
from kawa.functions.host import FunctionHost
from kawa.functions.metrics import FunctionMetrics, ReportingMetrics
from kawa.functions.options import HostOptions
from kawa.functions.processes import ProcessFunction, app_reference
from kawa.log import EventLog, open_log
from kawa.log.base import TopicSpec
from kawa.log.partitioner import partition_for_key
from kawa.portal.sources.functions import FunctionsSource
from tests.functions.conftest import ROOT, committed, produce, read_all, wait_for

pytestmark = pytest.mark.timeout(300)

RESULTS = "KAWA_TEST_PROCESS_RESULTS"
OPTIONS = HostOptions(tick_s=0.05, poll_timeout_s=0.05, commit_interval_s=0.1, drain_timeout_s=30.0,
                      session_timeout_ms=3000)
SLOW = 180.0  # deadline for conditions that wait on child processes starting on a loaded 2-core machine

# Two record keys per partition of a 4-partition topic, so every partition (and every replica) has work.
KEYS = [k for p in range(4) for k in [f"k{i}" for i in range(100) if partition_for_key(f"k{i}".encode(), 4) == p][:2]]

app = App("procs")
_local = threading.local()


def _db() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(os.environ[RESULTS], timeout=60)
    return conn


def _effect(event: CloudEvent, ctx: Any) -> CloudEvent:
    data = event.get_data()
    assert isinstance(data, dict)
    time.sleep(float(data.get("work", 0.005)))  # the work itself
    db = _db()
    with ctx.once("row", conn=db) as fresh:
        if fresh:
            row = (event.get_id(), data["key"], data["seq"], os.getpid())
            db.execute("INSERT INTO effects VALUES (?, ?, ?, ?)", row)
    ctx.metrics.incr("effects")
    return ctx.new_event("procs.done", {"id": event.get_id()})


@app.function(topic="scaled", reply_topic="scaled.out", concurrency=2, min_scale=0, max_scale=3,
              stable_window_s=3.0, scale_to_zero_grace_s=1.0, ordered_by_key=True, replicas="process")
def scaled(event: CloudEvent, ctx: Any) -> CloudEvent:
    return _effect(event, ctx)


@app.function(topic="steady", reply_topic="steady.out", concurrency=2, min_scale=2, max_scale=2, initial_scale=2,
              ordered_by_key=True)  # replicas "auto": a sync handler of an importable app runs in processes
def steady(event: CloudEvent, ctx: Any) -> CloudEvent:
    return _effect(event, ctx)


@app.function(topic="slow", concurrency=4, min_scale=1, max_scale=1, initial_scale=1, replicas="process")
def slow(event: CloudEvent, ctx: Any) -> CloudEvent:
    return _effect(event, ctx)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KawaConfig, EventLog, Path]]:
    db = tmp_path / "effects.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE effects (id TEXT, key TEXT, seq INTEGER, pid INTEGER)")
    monkeypatch.setenv(RESULTS, str(db))  # the children inherit the environment
    config = KawaConfig(home=tmp_path / ".kawa")
    log = open_log("embedded:", config)
    for topic in ("scaled", "steady", "slow"):
        log.create_topic(TopicSpec(topic, partitions=4))
    yield config, log, db
    log.close()


def send(log: EventLog, topic: str, start: int, n: int, work: float = 0.005) -> None:
    for k, key in enumerate(KEYS):  # the event's key is its record key, so ordered_by_key has something to order
        batch = [
            new_event("procs.job", "/tests/procs", {"key": key, "seq": i, "work": work}, id=f"{topic}-{i}")
            for i in range(start, start + n) if i % len(KEYS) == k
        ]
        produce(log, topic, batch, key=key.encode())


def replies(log: EventLog, topic: str) -> set[bytes | None]:
    """The ids of every reply on ``topic`` (all of them are on the log once their inputs are committed)."""
    total = sum(log.offsets_for_time(topic, 2**50).values())
    return {r.header("ce_id") for r in read_all(log, topic, total, timeout=60)}


def effects(db: Path) -> list[tuple[str, str, int, int]]:
    with sqlite3.connect(db, timeout=60) as conn:
        return conn.execute("SELECT id, key, seq, pid FROM effects ORDER BY rowid").fetchall()


def assert_exactly_once_in_key_order(db: Path, topic: str, n: int) -> list[tuple[str, str, int, int]]:
    rows = effects(db)
    ids = [row[0] for row in rows]
    assert sorted(ids) == sorted(f"{topic}-{i}" for i in range(n)), "every event's effect exactly once"
    by_key: dict[str, list[int]] = {}
    for _id, key, seq, _pid in rows:
        by_key.setdefault(key, []).append(seq)
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"key {key} handled out of order: {seqs}"
    return rows


def exited(pid: int) -> bool:
    """Whether ``pid`` is gone (or a zombie: a container's init may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def total_committed(log: EventLog, group: str, topic: str) -> int:
    return sum(v or 0 for v in committed(log, group, topic).values())


def test_process_replicas_scale_up_and_to_zero_and_deliver_every_event_once(world: Any) -> None:
    config, log, db = world
    n = 240
    with FunctionHost(app, log=log, config=config, functions=["scaled"], options=OPTIONS) as host:
        hosted = host.runner("scaled")
        assert isinstance(hosted, ProcessFunction)
        send(log, "scaled", 0, n, work=0.02)
        seen: set[int] = set()

        def all_done() -> bool:
            seen.update(hosted.pids())
            return len(effects(db)) == n

        wait_for(all_done, timeout=SLOW, interval=0.05)
        assert len(seen) >= 2, "the backlog scaled the function out to several processes"
        wait_for(lambda: host.metrics()["procs.scaled"].replicas == 0, timeout=SLOW, interval=0.05)
        wait_for(lambda: total_committed(log, "kawa-fn-procs-scaled", "scaled") == n, timeout=60)
        stats = host.metrics()["procs.scaled"]
        assert stats.succeeded >= n and stats.scale_events >= 2 and stats.latency_p50_ms is not None
        assert stats.custom.get("effects", 0) >= n, "handler metrics come back from the children"
        # From zero again: the group's lag brings a process back.
        send(log, "scaled", n, 40)
        wait_for(lambda: len(effects(db)) == n + 40, timeout=SLOW, interval=0.05)
    rows = assert_exactly_once_in_key_order(db, "scaled", n + 40)
    pids = {row[3] for row in rows}
    assert os.getpid() not in pids and len(pids) >= 2, "the handlers ran in child processes"
    assert len(replies(log, "scaled.out")) == n + 40, "every event replied (a redelivered reply keeps its id)"


def test_a_sigkilled_process_replica_loses_nothing(world: Any) -> None:
    config, log, db = world
    n = 400
    with FunctionHost(app, log=log, config=config, functions=["steady"], options=OPTIONS) as host:
        hosted = host.runner("steady")
        assert isinstance(hosted, ProcessFunction), "auto runs a sync handler of an importable app in processes"
        wait_for(lambda: len(hosted.assigned()) == 2 and all(hosted.assigned()), timeout=SLOW, interval=0.05)
        send(log, "steady", 0, n, work=0.01)
        wait_for(lambda: len(effects(db)) >= n // 4, timeout=SLOW, interval=0.01)
        victim = hosted.pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(effects(db)) == n, timeout=SLOW, interval=0.05)
        wait_for(lambda: victim not in hosted.pids() and len(hosted.pids()) == 2, timeout=SLOW, interval=0.05)
        wait_for(lambda: total_committed(log, "kawa-fn-procs-steady", "steady") == n, timeout=SLOW)
        portal = FunctionsSource(SimpleNamespace(function_hosts=lambda: [host]))  # type: ignore[arg-type]
        view = portal.function("steady").stats  # what the portal's functions page shows
        # A killed child's counts since its last report (0.05 s here) die with it; the events it had finished
        # come again and count as duplicates.
        assert view.replicas == 2 and view.succeeded + view.duplicates >= n and view.custom.get("effects", 0) > 0
    rows = assert_exactly_once_in_key_order(db, "steady", n)
    assert victim in {row[3] for row in rows}, "the killed replica had done part of the work"
    assert len(replies(log, "steady.out")) == n, "every event replied (a redelivered reply keeps its id)"


def test_stop_drains_process_replicas(world: Any) -> None:
    config, log, db = world
    n = 40
    host = FunctionHost(app, log=log, config=config, functions=["slow"], options=OPTIONS)
    host.start()
    try:
        hosted = host.runner("slow")
        assert isinstance(hosted, ProcessFunction)
        send(log, "slow", 0, n, work=0.5)
        wait_for(lambda: host.metrics()["procs.slow"].in_flight > 0, timeout=SLOW, interval=0.01)
        pids = hosted.pids()
    finally:
        host.stop()
    done = len(effects(db))
    assert 0 < done < n
    assert total_committed(log, "kawa-fn-procs-slow", "slow") == done, "what finished was committed, no more"
    assert all(exited(pid) for pid in pids), "the children exited"
    with FunctionHost(app, log=log, config=config, functions=["slow"], options=OPTIONS):
        wait_for(lambda: len(effects(db)) == n, timeout=SLOW, interval=0.05)
    assert sorted(row[0] for row in effects(db)) == sorted(f"slow-{i}" for i in range(n))


HOST = """
import sys, time
from kawa.config import KawaConfig
from kawa.functions.host import FunctionHost
from kawa.log import open_log
from tests.functions.test_host_processes import OPTIONS, app

config = KawaConfig(home=sys.argv[1])
host = FunctionHost(app, log=open_log("embedded:", config), config=config, functions=["slow"], options=OPTIONS)
host.start()
hosted = host.runner("slow")
while not (hosted.assigned() and all(hosted.assigned())):
    time.sleep(0.05)
print(" ".join(map(str, hosted.pids())), flush=True)
time.sleep(600)  # until the test kills this host
"""


def test_process_replicas_leave_when_their_host_is_killed(world: Any) -> None:
    config, _log, _db_path = world
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    host = subprocess.Popen([sys.executable, "-c", HOST, str(config.home)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert host.stdout is not None
        pids = [int(pid) for pid in host.stdout.readline().split()]
        assert pids, "the host started its process replicas"
    finally:
        host.kill()
        host.wait(30)
    wait_for(lambda: all(exited(pid) for pid in pids), timeout=SLOW, interval=0.05)


def test_process_replicas_need_an_importable_app_and_a_shared_log(world: Any) -> None:
    config, log, _db_path = world
    local = App("local")

    @local.function(topic="slow", replicas="process")
    def handle(event: CloudEvent, ctx: Any) -> None:
        return None

    with pytest.raises(InvalidFunction, match="not a module-level attribute"):
        FunctionHost(local, log=log, config=config, options=OPTIONS).start()
    memory = open_log("memory:")
    try:
        with pytest.raises(InvalidFunction, match="lives in this process only"):
            FunctionHost(app, log=memory, config=config, functions=["slow"], options=OPTIONS).start()
        # "auto" falls back to threads where processes cannot work; the host override forces threads.
        with FunctionHost(app, log=memory, config=config, functions=["steady"], options=OPTIONS) as host:
            assert not isinstance(host.runner("steady"), ProcessFunction)
    finally:
        memory.close()
    forced = HostOptions(tick_s=0.05, replicas="thread")
    with FunctionHost(app, log=log, config=config, functions=["slow"], options=forced) as host:
        assert not isinstance(host.runner("slow"), ProcessFunction)


def test_a_child_report_adds_up_in_the_host_metrics() -> None:
    child, host = ReportingMetrics("a", "f", "t", "g"), FunctionMetrics("a", "f", "t", "g")
    child.received += 3
    child.succeeded += 2
    child.finished(0.004, 0.010)
    child.finished(0.002, None)
    child.user.incr("rows", 2)
    host.absorb(child.report())
    child.succeeded += 1
    child.finished(0.006, None)
    report = child.report()
    assert report["counters"] == {"succeeded": 1} and report["latency"] == [0.006]
    host.absorb(report)
    stats = host.snapshot()
    assert (stats.received, stats.succeeded) == (3, 3)
    assert stats.latency_p50_ms == 4.0 and stats.end_to_end_p99_ms == 10.0 and stats.rate_per_s > 0
    assert child.report()["counters"] == {} and child.report()["user"] == {"rows": 2.0}


def test_an_app_in_main_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    script = App("script")

    def handle(event: CloudEvent, ctx: Any) -> None:
        return None

    handle.__module__ = "__main__"  # as if defined in a script run as `python script.py`
    script.function(topic="slow")(handle)
    monkeypatch.setattr(sys.modules["__main__"], "script_app", script, raising=False)
    why = app_reference(script)
    assert isinstance(why, str) and "__main__" in why and "move it to a module" in why
    assert str(app_reference(app)) == "tests.functions.test_host_processes:app"
