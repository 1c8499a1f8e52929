"""Benchmark of the function runtime: embedded host vs ``kawa worker`` on Apache Kafka.

    .venv/bin/python bench/functions.py [--events N] [--kafka host:port | --no-kafka]

Measures, for a no-op function and a 2 ms CPU-bound function:

- events/s through the host (events already in the log; from the first to the last handled event);
- per-event runtime overhead: host wall time per event minus handler time, one invocation at a time
  (concurrency 1, one replica), so nothing overlaps and nothing is hidden by parallelism; on the embedded
  on-disk log (what ``kawa up`` runs) and on the in-memory log (the host's own share);
- end-to-end p50/p99 latency: produce → handler done, at a steady offered rate;
- cold start: from producing the first event after the function scaled to zero to its completion;
- ``kawa worker`` on Apache Kafka: events/s of a separate worker process (``scripts/kafka.sh start`` is run
  when no ``--kafka`` address is given and the broker is not running);
- the 2 ms CPU-bound handler with process replicas and with thread replicas, side by side: one replica per
  core, concurrency 1, events already in the log, from the first to the last event the host counts as done
  (the goal for processes: >= 0.85 x cores / 2 ms). ``--cpu-only`` runs just this comparison.

The last line is JSON: noop_eps_embedded, noop_eps_kafka, overhead_us_embedded, p99_ms_embedded,
cold_start_ms, cpu_handler_eps_process, cpu_handler_eps_thread, cores (plus the other numbers: among them
the CPU ms per event of each replica kind and the load average, since on a busy machine the share of CPU the
run gets, not the host, bounds the events/s).
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

faulthandler.enable()  # a crash in a native client (librdkafka) prints every thread's stack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kawa.config import load_config  # noqa: E402
from kawa.events import new_event, to_kafka  # noqa: E402
from kawa.functions import App, FunctionHost, HostOptions  # noqa: E402
from kawa.log import open_log  # noqa: E402
from kawa.log.base import EventLog, TopicSpec  # noqa: E402

console = Console(stderr=True)
OPTIONS = HostOptions(commit_interval_s=0.5)


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cores() -> int:
    """The cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


CORES = cores()
CPU_APP = App("benchcpu")  # a module attribute: process replicas import it from this file


@CPU_APP.function(topic="bench-cpu-process", concurrency=1, min_scale=CORES, max_scale=CORES, initial_scale=CORES,
                  replicas="process")
def cpu_process(event: Any, ctx: Any) -> None:
    busy(0.002)


@CPU_APP.function(topic="bench-cpu-thread", concurrency=1, min_scale=CORES, max_scale=CORES, initial_scale=CORES,
                  replicas="thread")
def cpu_thread(event: Any, ctx: Any) -> None:
    busy(0.002)


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of ``pids`` (Linux /proc; children's share 0 elsewhere)."""
    total = time.process_time()
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_handler_eps(log: EventLog, config: Any, mode: str, n: int, progress: Progress) -> tuple[float, float]:
    """Events/s of the 2 ms CPU-bound handler with ``mode`` replicas (one per core), counted by the host, and
    the CPU milliseconds the host and its replicas spent per event (what a machine with idle cores is bound
    by: cores / that = the events/s it can reach)."""
    # Run as a script this file is __main__, which a child process cannot import: use it as a module.
    module = sys.modules[__name__] if __name__ != "__main__" else importlib.import_module(Path(__file__).stem)
    name, topic = f"cpu-{mode}", f"bench-cpu-{mode}"
    log.create_topic(TopicSpec(topic, partitions=max(4, 2 * CORES)), exist_ok=True)
    task = progress.add_task(f"embedded host, 2 ms CPU, {CORES} {mode} replicas", total=n)
    with FunctionHost(module.CPU_APP, log=log, config=config, functions=[name], options=OPTIONS) as host:
        hosted = host.runner(name)
        assigned = getattr(hosted, "assigned", None)
        deadline = time.monotonic() + 300
        while assigned is not None and time.monotonic() < deadline:  # every process in the group, holding partitions
            held = assigned()
            if len(held) == CORES and all(held):
                break
            time.sleep(0.05)
        pids = list(getattr(hosted, "pids", list)())
        cpu_before = cpu_seconds(pids)
        produce(log, topic, n)
        first: tuple[float, int] | None = None
        done = 0
        while done < n and time.monotonic() < deadline:
            done = host.metrics()[f"benchcpu.{name}"].succeeded
            if done and first is None:
                first = (time.perf_counter(), done)
            progress.update(task, completed=done)
            time.sleep(0.01)
        last = time.perf_counter()
        cpu_ms = (cpu_seconds(pids) - cpu_before) * 1000.0 / n
    assert first is not None and done >= n, f"{mode} replicas finished {done} of {n} events"
    return (n - first[1]) / max(last - first[0], 1e-9), cpu_ms


def produce(log: EventLog, topic: str, n: int, stamp: bool = False) -> None:
    producer = log.producer()
    try:
        for i in range(n):
            data = {"i": i, "t": time.perf_counter()} if stamp else {"i": i}
            key, value, headers = to_kafka(new_event("bench.event", "/bench", data, id=f"b{i}-{uuid.uuid4().hex[:6]}"))
            producer.produce(topic, value, key=key, headers=headers)
    finally:
        producer.close()  # flushes; an unclosed Kafka producer keeps its poller thread until exit


class Tally:
    """What the handler records: count, handler time, completion times."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.count = 0
        self.handler_s = 0.0
        self.first = self.last = 0.0
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.lock = threading.Lock()

    def record(self, started: float, produced_at: float | None = None) -> None:
        now = time.perf_counter()
        with self.lock:
            self.count += 1
            self.handler_s += now - started
            if self.count == 1:
                self.first = now
            self.last = now
            if produced_at is not None:
                self.latencies.append(now - produced_at)
            if self.count >= self.expect:
                self.done.set()


def run_host(
    log: EventLog,
    n: int,
    work: Callable[[], None],
    *,
    concurrency: int,
    max_scale: int,
    stamp: bool = False,
    rate: float | None = None,
    progress: Progress | None = None,
    label: str = "",
) -> Tally:
    """Run one function over ``n`` events on ``log``; events are pre-produced unless ``rate`` is given."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    log.create_topic(TopicSpec(topic, partitions=4))
    tally = Tally(n)
    app = App("bench")

    @app.function(topic=topic, concurrency=concurrency, min_scale=1, max_scale=max_scale, initial_scale=max_scale)
    def handle(event: Any, ctx: Any) -> None:
        started = time.perf_counter()
        work()
        data = event.get_data()
        tally.record(started, data.get("t") if stamp else None)

    task = progress.add_task(label, total=n) if progress else None
    if rate is None:
        produce(log, topic, n)
    with FunctionHost(app, log=log, options=OPTIONS):
        if rate is not None:
            producer = log.producer()
            interval = 1.0 / rate
            next_at = time.perf_counter()
            for i in range(n):
                while time.perf_counter() < next_at:
                    time.sleep(max(0.0, next_at - time.perf_counter()) / 2)
                key, value, headers = to_kafka(
                    new_event("bench.event", "/bench", {"i": i, "t": time.perf_counter()}, id=f"r{i}")
                )
                producer.produce(topic, value, key=key, headers=headers)
                next_at += interval
            producer.close()
        while not tally.done.wait(0.2):
            if progress is not None and task is not None:
                progress.update(task, completed=tally.count)
        if progress is not None and task is not None:
            progress.update(task, completed=tally.count)
    return tally


def cold_starts(log: EventLog, repeats: int) -> list[float]:
    """Seconds from producing an event to its completion, each time after the function scaled to zero."""
    topic = f"bench-cold-{uuid.uuid4().hex[:8]}"
    log.create_topic(TopicSpec(topic))
    done = threading.Event()
    finished = [0.0]
    app = App("cold")

    @app.function(topic=topic, min_scale=0, stable_window_s=0.5, scale_to_zero_grace_s=0.2)
    def handle(event: Any, ctx: Any) -> None:
        finished[0] = time.perf_counter()
        done.set()

    out = []
    with FunctionHost(app, log=log, options=HostOptions(tick_s=0.05)) as host:
        runner = host.runner("handle")
        for _ in range(repeats):
            while runner.runtime.metrics.replicas != 0:
                time.sleep(0.05)
            time.sleep(0.3)
            done.clear()
            start = time.perf_counter()
            produce(log, topic, 1)
            done.wait(10)
            out.append(finished[0] - start)
    return out


WORKER_APP = """
import os, time, kawa

app = kawa.App("benchw")
N = int(os.environ["BENCH_N"])
state = {"n": 0, "first": 0.0}


@app.function(topic=os.environ["BENCH_TOPIC"], group=os.environ["BENCH_GROUP"], concurrency=4, min_scale=1,
              max_scale=2, initial_scale=2)
def noop(event, ctx):
    state["n"] += 1
    if state["n"] == 1:
        state["first"] = time.time()
    if state["n"] == N:
        with open(os.environ["BENCH_OUT"], "w") as f:
            f.write(f"{state['first']} {time.time()}")
"""


def kafka_worker_eps(bootstrap: str, n: int, progress: Progress) -> float:
    uri = f"kafka://{bootstrap}"
    log = open_log(uri, load_config())
    topic = f"bench-kafka-{uuid.uuid4().hex[:8]}"
    log.create_topic(TopicSpec(topic, partitions=4))
    task = progress.add_task("kawa worker on Kafka (no-op)", total=n)
    produce(log, topic, n)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "benchworker.py").write_text(WORKER_APP)
        out = Path(tmp) / "out.txt"
        env = {
            **os.environ,
            "BENCH_N": str(n),
            "BENCH_TOPIC": topic,
            "BENCH_GROUP": f"bench-{topic}",
            "BENCH_OUT": str(out),
            "KAWA_HOME": str(Path(tmp) / ".kawa"),
        }
        kawa = str(Path(sys.executable).parent / "kawa")
        worker = subprocess.Popen(
            [kawa, "--log", uri, "worker", "--app", "benchworker:app"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 300
            while not out.exists() and time.monotonic() < deadline:
                lag = sum(r.lag for r in log.lag(f"bench-{topic}", [topic]))
                progress.update(task, completed=max(0, n - lag))
                time.sleep(0.5)
            progress.update(task, completed=n)
        finally:
            worker.terminate()
            worker.wait(60)
        first, last = map(float, out.read_text().split())
    log.close()
    return (n - 1) / max(last - first, 1e-9)


def kafka_address(arg: str | None) -> str | None:
    if arg:
        return arg
    script = ROOT / "scripts" / "kafka.sh"
    if not script.exists():
        return None
    result = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=900)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("KAWA_TEST_KAFKA=")]
    return lines[-1].split("=", 1)[1] if result.returncode == 0 and lines else None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def suite(log: EventLog, config: Any, n: int, progress: Progress, results: dict[str, Any]) -> None:
    """The host's own numbers: throughput, overhead, latency, cold start."""
    noop = run_host(
        log, n, lambda: None, concurrency=4, max_scale=4, progress=progress, label="embedded host, no-op"
    )
    results["noop_eps_embedded"] = (n - 1) / (noop.last - noop.first)
    cpu_n = max(200, n // 10)
    cpu = run_host(
        log,
        cpu_n,
        lambda: busy(0.002),
        concurrency=1,
        max_scale=2,
        progress=progress,
        label="embedded host, 2 ms CPU",
    )
    results["cpu2ms_eps_embedded"] = (cpu_n - 1) / (cpu.last - cpu.first)
    serial = run_host(
        log,
        n,
        lambda: None,
        concurrency=1,
        max_scale=1,
        progress=progress,
        label="embedded host, no-op, one at a time",
    )
    per_event = (serial.last - serial.first) / (n - 1)
    results["overhead_us_embedded"] = (per_event - serial.handler_s / serial.count) * 1e6
    memory = open_log("memory:", config)
    mem = run_host(
        memory,
        n,
        lambda: None,
        concurrency=1,
        max_scale=1,
        progress=progress,
        label="in-memory log, no-op, one at a time (host alone)",
    )
    results["overhead_us_memory_log"] = ((mem.last - mem.first) / (n - 1) - mem.handler_s / mem.count) * 1e6
    memory.close()
    serial_cpu = run_host(
        log,
        cpu_n,
        lambda: busy(0.002),
        concurrency=1,
        max_scale=1,
        progress=progress,
        label="embedded host, 2 ms CPU, one at a time",
    )
    per_cpu = (serial_cpu.last - serial_cpu.first) / (cpu_n - 1)
    results["overhead_us_embedded_cpu2ms"] = (per_cpu - serial_cpu.handler_s / serial_cpu.count) * 1e6
    rate = min(1000.0, results["noop_eps_embedded"] / 4)
    e2e_n = max(500, min(n, int(rate * 5)))
    steady = run_host(
        log,
        e2e_n,
        lambda: None,
        concurrency=4,
        max_scale=4,
        stamp=True,
        rate=rate,
        progress=progress,
        label=f"embedded host, end-to-end at {rate:.0f} ev/s",
    )
    results["p50_ms_embedded"] = pct(steady.latencies, 0.50) * 1000
    results["p99_ms_embedded"] = pct(steady.latencies, 0.99) * 1000
    results["e2e_rate_eps"] = rate
    task = progress.add_task("cold starts (scale-from-zero)", total=5)
    colds = cold_starts(log, 5)
    progress.update(task, completed=5)
    results["cold_start_ms"] = statistics.median(colds) * 1000
    results["cold_start_max_ms"] = max(colds) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events per throughput run (default 5000)")
    parser.add_argument("--kafka", help="bootstrap host:port of a running broker (default: scripts/kafka.sh)")
    parser.add_argument("--no-kafka", action="store_true", help="skip the kawa worker on Kafka run")
    parser.add_argument("--cpu-only", action="store_true", help="only the 2 ms CPU handler, processes vs threads")
    args = parser.parse_args()
    n = args.events
    tmp = tempfile.TemporaryDirectory()
    os.environ["KAWA_HOME"] = tmp.name
    config = load_config()
    results: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        log = open_log("embedded:", config)
        if not args.cpu_only:
            suite(log, config, n, progress, results)
        cmp_n = max(1000, n // 2)
        for mode in ("process", "thread"):
            eps, cpu_ms = cpu_handler_eps(log, config, mode, cmp_n, progress)
            results[f"cpu_handler_eps_{mode}"] = eps
            results[f"cpu_handler_cpu_ms_per_event_{mode}"] = cpu_ms
        results["cores"] = CORES
        results["load_average_1m"] = os.getloadavg()[0]  # a loaded machine bounds the events/s, not the host
        log.close()
        results["noop_eps_kafka"] = None
        if not (args.no_kafka or args.cpu_only):
            address = kafka_address(args.kafka)
            if address is None:
                console.print("[yellow]no Kafka broker: skipping the kawa worker run[/]")
            else:
                results["noop_eps_kafka"] = kafka_worker_eps(address, n, progress)
    tmp.cleanup()
    table = Table(
        "measure",
        "value",
        title=f"functions benchmark ({n} events, {platform.processor() or 'cpu'}, {os.cpu_count()} cores)",
    )
    for key, value in results.items():
        table.add_row(key, "-" if value is None else f"{value:,.1f}")
    console.print(table)
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
