"""Object-store benchmark: puts/s and put→event-on-topic latency, local backend vs S3 (moto + SQS bridge).

    .venv/bin/python bench/store_notify.py [--objects N] [--size BYTES] [--s3-endpoint URL]

Both runs publish to the embedded event log in a temporary home. Local: ``LocalStore.put`` publishes the
notification itself. S3: puts go to moto_server (started here on loopback unless ``--s3-endpoint`` is given),
which sends each record to an SQS queue; the ``kawa up`` bridge service moves it onto the log. Latency is
measured from the start of each put to the moment a consumer thread reads the object's event.

Progress goes to stderr; the last line of stdout is JSON with ``local_puts_per_s``, ``local_notify_p50_ms``,
``local_notify_p99_ms``, ``s3_puts_per_s``, ``s3_notify_p50_ms``, ``s3_notify_p99_ms``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kawa.config import KawaConfig
from kawa.log import EventLog, open_log
from kawa.store import NotificationRule, ObjectStore, open_store

console = Console(stderr=True)
TOPIC = "bench-objects"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Arrivals:
    """A consumer thread that stamps the arrival time of each object's event (record key ``bucket/key``)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.times: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        consumer = self.log.consumer(f"bench-{uuid.uuid4().hex[:8]}", [TOPIC], auto_offset_reset="earliest")
        try:
            while not self._stop.is_set():
                for record in consumer.poll(timeout=0.05):
                    self.times.setdefault((record.key or b"").decode(), time.perf_counter())
        finally:
            consumer.close()

    def wait_for(self, keys: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(k not in self.times for k in keys):
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run(store: ObjectStore, log: EventLog, bucket: str, objects: int, size: int, label: str) -> dict[str, float]:
    body = os.urandom(size)
    arrivals = Arrivals(log)
    arrivals.start()
    started: dict[str, float] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"{label}: put", total=objects)
        begin = time.perf_counter()
        for i in range(objects):
            key = f"in/obj-{i:06d}.bin"
            started[f"{bucket}/{key}"] = time.perf_counter()
            store.put(bucket, key, body)
            bar.advance(task)
        elapsed = time.perf_counter() - begin
        wait = bar.add_task(f"{label}: waiting for events", total=None)
        arrivals.wait_for(list(started), timeout=60)
        bar.remove_task(wait)
    arrivals.stop()
    latencies = [(arrivals.times[k] - t0) * 1000 for k, t0 in started.items() if k in arrivals.times]
    if len(latencies) != objects:
        console.print(f"[red]{label}: only {len(latencies)} of {objects} events arrived[/]")
    return {
        "puts_per_s": round(objects / elapsed, 1),
        "notify_p50_ms": round(percentile(latencies, 0.50), 2) if latencies else float("nan"),
        "notify_p99_ms": round(percentile(latencies, 0.99), 2) if latencies else float("nan"),
        "events": float(len(latencies)),
    }


def bench_local(home: Path, objects: int, size: int) -> dict[str, float]:
    config = KawaConfig.model_validate({"home": str(home)})
    log = open_log("embedded:", config)
    store = open_store("file:", config, log=log)
    try:
        store.create_bucket("bench")
        store.add_notification(NotificationRule("bench", TOPIC))
        return run(store, log, "bench", objects, size, "local")
    finally:
        store.close()
        log.close()


@contextmanager
def moto_server(endpoint: str | None) -> Iterator[str]:
    if endpoint:
        yield endpoint
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_s3(home: Path, objects: int, size: int, endpoint: str | None) -> dict[str, float]:
    from kawa.store.service import S3BridgeService

    with moto_server(endpoint) as url:
        settings: dict[str, Any] = {
            "uri": "s3://",
            "endpoint_url": url,
            "access_key_id": "test",
            "secret_access_key": "test",
            "notify": {
                "mode": "sqs",
                "queue_name": f"kawa-bench-{uuid.uuid4().hex[:8]}",
                "sqs_wait_s": 1,
                "poll_interval_s": 0.2,
            },
        }
        config = KawaConfig.model_validate({"home": str(home), "store": settings})
        log = open_log("embedded:", config)
        store = open_store("s3://", config, log=log)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        service = S3BridgeService(store, config.store.notify)  # type: ignore[arg-type]
        try:
            store.create_bucket(bucket)
            store.add_notification(NotificationRule(bucket, TOPIC))
            service.start()
            time.sleep(1.0)  # the bridge thread is polling the queue
            return run(store, log, bucket, objects, size, "s3")
        finally:
            service.stop()
            store.close()
            log.close()


def main() -> None:
    faulthandler.enable()  # a crash in a native library (librdkafka, numpy) prints every thread's stack
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--s3-endpoint", default=None, help="an S3 server with SQS (default: start moto_server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kawa-bench-") as tmp:
        local = bench_local(Path(tmp) / "local", args.objects, args.size)
        s3 = bench_s3(Path(tmp) / "s3", args.objects, args.size, args.s3_endpoint)
    table = Table("backend", "puts/s", "notify p50 ms", "notify p99 ms", "events")
    for name, result in (("local", local), ("s3 (moto + SQS bridge)", s3)):
        table.add_row(
            name,
            str(result["puts_per_s"]),
            str(result["notify_p50_ms"]),
            str(result["notify_p99_ms"]),
            f"{int(result['events'])}/{args.objects}",
        )
    console.print(f"{args.objects} objects of {args.size} bytes")
    console.print(table)
    summary = {
        "local_puts_per_s": local["puts_per_s"],
        "local_notify_p50_ms": local["notify_p50_ms"],
        "local_notify_p99_ms": local["notify_p99_ms"],
        "s3_puts_per_s": s3["puts_per_s"],
        "s3_notify_p50_ms": s3["notify_p50_ms"],
        "s3_notify_p99_ms": s3["notify_p99_ms"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
