"""Object-store benchmark: puts/s and put→event-on-topic latency, local backend vs S3 (moto + SQS bridge) vs
Ceph RGW (persistent topic, HTTP push into ``kawa ingress``).

    .venv/bin/python bench/store_notify.py [--objects N] [--size BYTES] [--s3-endpoint URL] [--no-ceph]

Both runs publish to the embedded event log in a temporary home. Local: ``LocalStore.put`` publishes the
notification itself. S3: puts go to moto_server (started here on loopback unless ``--s3-endpoint`` is given),
which sends each record to an SQS queue; the ``kawa up`` bridge service moves it onto the log. Latency is
measured from the start of each put to the moment a consumer thread reads the object's event. Ceph: puts go to
the RGW that ``scripts/ceph.sh`` runs (started here, and stopped again, when it does not run yet); Kawa's ``rgw``
mode makes a persistent RGW topic whose HTTP push endpoint is a ``kawa ingress`` on a thread here, which appends
each record to the log before answering. One object is put and awaited first, since the RGW takes up a new
topic's queue only at its next 30-second pass.

Progress goes to stderr; the last line of stdout is JSON with ``local_puts_per_s``, ``local_notify_p50_ms``,
``local_notify_p99_ms``, ``s3_puts_per_s``, ``s3_notify_p50_ms``, ``s3_notify_p99_ms``, ``ceph_puts_per_s``,
``ceph_p50_ms``, ``ceph_p99_ms``.
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


@contextmanager
def ceph_rgw() -> Iterator[dict[str, str]]:
    """The RGW of ``scripts/ceph.sh``: its endpoint and keys (``KAWA_TEST_CEPH*``)."""
    script = [str(Path(__file__).resolve().parents[1] / "scripts" / "ceph.sh")]
    running = subprocess.run(["bash", *script, "status"], capture_output=True, text=True).returncode == 0
    console.print("Ceph: " + ("using the running cluster" if running else "starting scripts/ceph.sh ..."))
    started = subprocess.run(["bash", *script, "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/ceph.sh start failed:\n{started.stderr[-3000:]}")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if line.startswith("KAWA_TEST_CEPH"))
    try:
        yield values
    finally:
        if not running:
            subprocess.run(["bash", *script, "stop"], capture_output=True, timeout=120)


def bench_ceph(home: Path, objects: int, size: int) -> dict[str, float]:
    from kawa.store.ingress import BackgroundIngress

    with ceph_rgw() as rgw:
        config = KawaConfig.model_validate({"home": str(home)})
        log = open_log("embedded:", config)
        with BackgroundIngress(log) as ingress:
            settings: dict[str, Any] = {
                "uri": "s3://",
                "endpoint_url": rgw["KAWA_TEST_CEPH"],
                "access_key_id": rgw["KAWA_TEST_CEPH_ACCESS_KEY"],
                "secret_access_key": rgw["KAWA_TEST_CEPH_SECRET_KEY"],
                "notify": {"mode": "rgw", "ingress_url": ingress.url},
            }
            config = KawaConfig.model_validate({"home": str(home), "store": settings})
            store = open_store("s3://", config, log=log)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            try:
                store.create_bucket(bucket)
                store.add_notification(NotificationRule(bucket, TOPIC))
                warm = Arrivals(log)
                warm.start()
                store.put(bucket, "warm-up", b"x")
                warm.wait_for([f"{bucket}/warm-up"], timeout=120)  # the RGW's next pass over its queues
                warm.stop()
                if f"{bucket}/warm-up" not in warm.times:
                    raise RuntimeError("the RGW delivered no event within 120 s; see its log under .cache/ceph")
                return run(store, log, bucket, objects, size, "ceph")
            finally:
                store.close()
                log.close()


def main() -> None:
    faulthandler.enable()  # a crash in a native library (librdkafka, numpy) prints every thread's stack
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--s3-endpoint", default=None, help="an S3 server with SQS (default: start moto_server)")
    parser.add_argument("--no-ceph", action="store_true", help="leave out the Ceph RGW column")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kawa-bench-") as tmp:
        local = bench_local(Path(tmp) / "local", args.objects, args.size)
        s3 = bench_s3(Path(tmp) / "s3", args.objects, args.size, args.s3_endpoint)
        ceph = None if args.no_ceph else bench_ceph(Path(tmp) / "ceph", args.objects, args.size)
    table = Table("backend", "puts/s", "notify p50 ms", "notify p99 ms", "events")
    rows = [("local", local), ("s3 (moto + SQS bridge)", s3)]
    if ceph is not None:
        rows.append(("ceph rgw (HTTP push + ingress)", ceph))
    for name, result in rows:
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
    if ceph is not None:
        summary |= {"ceph_puts_per_s": ceph["puts_per_s"], "ceph_p50_ms": ceph["notify_p50_ms"],
                    "ceph_p99_ms": ceph["notify_p99_ms"]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
