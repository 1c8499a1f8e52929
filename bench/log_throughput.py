"""Event-log benchmark: the embedded log against Apache Kafka, from the same client process.

    .venv/bin/python bench/log_throughput.py [--records N] [--size BYTES] [--rate R] [--latency-seconds S]
                                             [--partitions P] [--kafka host:port]

For each backend: produce throughput (N records of SIZE bytes through ``producer.produce`` + ``flush``),
consume throughput (a consumer group reading them back), then publish→deliver latency at a steady R
records/s for S seconds (the send time travels in a header; a consumer thread measures on arrival).
Without ``--kafka`` the broker is started with ``scripts/kafka.sh`` (and stopped again if this run started it).

Progress goes to stderr; the last line of stdout is JSON with ``embedded_produce_rps``,
``embedded_consume_rps``, ``kafka_produce_rps``, ``kafka_consume_rps``, ``embedded_p50_ms``,
``embedded_p99_ms``, ``kafka_p50_ms``, ``kafka_p99_ms``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kawa.config import KawaConfig
from kawa.log import EventLog, TopicSpec, open_log

ROOT = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def produce_rps(log: EventLog, topic: str, records: int, size: int) -> float:
    value = os.urandom(size)
    producer = log.producer()
    step = max(1, records // 100)
    with progress() as bar:
        task = bar.add_task(f"{log.uri[:24]} produce", total=records)
        start = time.perf_counter()
        for i in range(records):
            producer.produce(topic, value)
            if i % step == 0:
                bar.update(task, completed=i)
        producer.flush()
        elapsed = time.perf_counter() - start
    producer.close()
    return records / elapsed


def consume_rps(log: EventLog, topic: str, records: int) -> float:
    consumer = log.consumer(f"bench-{uuid.uuid4().hex[:8]}", [topic], auto_offset_reset="earliest")
    got = 0
    with progress() as bar:
        task = bar.add_task(f"{log.uri[:24]} consume", total=records)
        # The clock starts with the first record, so the group join is not counted.
        while not (batch := consumer.poll(1.0, max_records=10_000)):
            pass
        start = time.perf_counter()
        got = len(batch)
        deadline = time.monotonic() + 600
        while got < records and time.monotonic() < deadline:
            got += len(consumer.poll(1.0, max_records=10_000))
            bar.update(task, completed=got)
        elapsed = time.perf_counter() - start
    consumer.close()
    if got < records:
        raise SystemExit(f"{log.uri}: read {got} of {records} records")
    return records / elapsed


def latency_ms(log: EventLog, topic: str, rate: int, seconds: float, size: int) -> tuple[float, float]:
    """p50 and p99 of publish→deliver at a steady ``rate`` records/s."""
    consumer = log.consumer(f"bench-lat-{uuid.uuid4().hex[:8]}", [topic], auto_offset_reset="latest")
    while not consumer.assignment():
        consumer.poll(0.1)
    for tp in consumer.assignment():
        consumer.position(tp)  # pin "latest" before the first record is sent
    producer = log.producer()
    # Warm up: the first record pays for connections, the idempotent producer id and metadata.
    producer.send(topic, b"warm-up")
    deadline = time.monotonic() + 30
    while not consumer.poll(0.1) and time.monotonic() < deadline:
        pass
    total = int(rate * seconds)
    samples: list[float] = []
    done = threading.Event()

    def receive() -> None:
        deadline = None
        while len(samples) < total:
            for record in consumer.poll(0.1):
                sent = record.header("sent_ns")
                if sent is not None:
                    samples.append((time.perf_counter_ns() - int(sent)) / 1e6)
            if done.is_set():
                deadline = deadline or time.monotonic() + 10
                if time.monotonic() > deadline:
                    break

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    value = os.urandom(size)
    with progress() as bar:
        task = bar.add_task(f"{log.uri[:24]} latency @ {rate}/s", total=total)
        start = time.perf_counter()
        for i in range(total):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            producer.produce(topic, value, headers=[("sent_ns", str(time.perf_counter_ns()).encode())])
            if i % 500 == 0:
                bar.update(task, completed=i)
        producer.flush()
        done.set()
        thread.join(30)
    producer.close()
    consumer.close()
    if len(samples) < total * 0.99:
        raise SystemExit(f"{log.uri}: only {len(samples)} of {total} records arrived in the latency run")
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def run_backend(log: EventLog, args: argparse.Namespace) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    latency_topic = f"{topic}-latency"
    log.create_topic(TopicSpec(topic, args.partitions, retention_ms=None))
    log.create_topic(TopicSpec(latency_topic, args.partitions, retention_ms=None))
    try:
        produced = produce_rps(log, topic, args.records, args.size)
        console.log(f"{log.uri}: produce {produced:,.0f} records/s")
        consumed = consume_rps(log, topic, args.records)
        console.log(f"{log.uri}: consume {consumed:,.0f} records/s")
        p50, p99 = latency_ms(log, latency_topic, args.rate, args.latency_seconds, args.size)
        console.log(f"{log.uri}: latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    finally:
        for name in (topic, latency_topic):
            log.delete_topic(name)
    return {"produce_rps": produced, "consume_rps": consumed, "p50_ms": p50, "p99_ms": p99}


@contextmanager
def kafka_broker(address: str | None) -> Iterator[str]:
    if address:
        yield address
        return
    script = ROOT / "scripts" / "kafka.sh"
    running = subprocess.run(["bash", str(script), "status"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
    lines = [line for line in started.stdout.splitlines() if line.startswith("KAWA_TEST_KAFKA=")]
    if started.returncode != 0 or not lines:
        raise SystemExit(f"could not start Kafka with {script}:\n{started.stderr}")
    try:
        yield lines[-1].split("=", 1)[1]
    finally:
        if not running:
            subprocess.run(["bash", str(script), "stop"], capture_output=True)


def main(argv: list[str] | None = None) -> None:
    faulthandler.enable()  # a crash in a native library (librdkafka, numpy) prints every thread's stack
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--size", type=int, default=200, help="value size in bytes")
    parser.add_argument("--rate", type=int, default=5000, help="records/s in the latency run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--kafka", metavar="HOST:PORT", help="an existing broker (default: start one)")
    args = parser.parse_args(argv)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kawa-bench-") as tmp:
        config = KawaConfig(home=Path(tmp))
        embedded = open_log(f"embedded:{tmp}/log", config)
        results["embedded"] = run_backend(embedded, args)
        embedded.close()
    with kafka_broker(args.kafka) as address:
        kafka = open_log(f"kafka://{address}", KawaConfig())
        results["kafka"] = run_backend(kafka, args)
        kafka.close()

    table = Table(title=f"{args.records:,} records x {args.size} B, latency at {args.rate}/s")
    for column in ("backend", "produce rec/s", "consume rec/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for name, r in results.items():
        table.add_row(
            name, f"{r['produce_rps']:,.0f}", f"{r['consume_rps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"
        )
    console.print(table)
    summary = {
        f"{name}_{metric}": round(value, 3 if metric.endswith("ms") else 0)
        for name, r in results.items()
        for metric, value in r.items()
    }
    print(json.dumps(summary))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
