"""Benchmark of data routes.

    .venv/bin/python bench/routes.py [--rows N] [--images M]

1. A CSV of N rows (default 1,000,000: id, name, e-mail, phone, card, amount, free-text note) is played by the
   route ``replay:tx.csv → validate (JSON Schema) → pii-mask (hmac e-mail, drop name, mask card, detectors on
   the note) → topic`` on the embedded on-disk log, with the route runtime (batches, commits, progress) as
   ``kawa up`` runs it. Rate = rows published / wall time from route start to the last row committed.
2. DICOM de-identification of the RG1 computed-radiography chest image (pydicom-data, 1955 x 1841, 16-bit,
   7 MB): read bytes → de-identify (PS3.15 basic profile) → write bytes, M times, images/s.

The last line is JSON: {"csv_route_rows_per_s": ..., "dicom_deid_per_s": ...}.
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

SCHEMA = {
    "type": "object",
    "required": ["id", "email", "amount"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "email": {"type": "string", "pattern": "@"},
        "amount": {"type": "string", "pattern": "^[0-9]+[.][0-9]{2}$"},
    },
}


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(1)
    with open(path, "w") as handle:
        handle.write("id,name,email,phone,card,amount,note\n")
        for i in range(rows):
            phone = f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
            handle.write(
                f"{i},Person {i},person{i}@example.org,{phone},4111 1111 1111 {i % 10000:04d},"
                f"{rng.randrange(1, 99999) / 100:.2f},call {phone} re order {i}\n"
            )


def csv_route(rows: int, console: Console) -> float:
    from kawa.backends import open_backends
    from kawa.config import load_config
    from kawa.routes.components.base import RouteContext
    from kawa.routes.progress import ProgressStore
    from kawa.routes.spec import route
    from kawa.routes.worker import RouteWorker

    with tempfile.TemporaryDirectory(prefix="kawa-bench-routes-") as tmp:
        root = Path(tmp)
        csv_path = root / "tx.csv"
        console.print(f"writing {rows:,} CSV rows …")
        write_csv(csv_path, rows)
        config = load_config(home=str(root / ".kawa"), env={})
        progress_store = ProgressStore(config.path("routes", "progress.db"))
        ctx = RouteContext(route_id="bench", config=config, progress=progress_store, backends=open_backends(config))
        spec = route(
            "bench",
            f"replay:{csv_path}",
            [
                {"validate": {"schema": SCHEMA}},
                {"pii-mask": {"fields": {"email": "hmac", "name": "drop", "card": "mask"}, "text": ["note"]}},
            ],
            "topic:bench-tx",
            batch=1000,
        )
        worker = RouteWorker(spec, ctx, idle_poll_s=0.05)
        columns = [TextColumn("csv route"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("rows", total=rows)
            started = time.perf_counter()
            worker.start()
            done = 0
            while done < rows:
                time.sleep(0.25)
                done = int(progress_store.get("bench", "row", 0))
                bar.update(task, completed=done)
                if not worker.alive:
                    raise SystemExit(f"route stopped: {worker.stats.last_error}")
            elapsed = time.perf_counter() - started
        worker.stop()
        stats = worker.stats
        info = ctx.log.describe_topic("bench-tx")
        published = sum(p.end_offset for p in info.partitions)
        ctx.backends.close()
        progress_store.close()
        if published != rows or stats.dead_lettered:
            raise SystemExit(f"expected {rows} records, got {published} (dead letters: {stats.dead_lettered})")
        rate = rows / elapsed
        console.print(f"csv route: {rows:,} rows in {elapsed:.1f} s = {rate:,.0f} rows/s")
        return rate


def dicom_deid(images: int, console: Console) -> float:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from kawa.routes.deid import deidentify_dataset
    from kawa.routes.message import dicom_bytes

    path = get_testdata_file("RG1_UNCI.dcm")
    assert path is not None
    raw = Path(path).read_bytes()
    key = os.urandom(32)
    with Progress(TextColumn("dicom de-id"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("images", total=images)
        started = time.perf_counter()
        for _ in range(images):
            ds = dcmread(io.BytesIO(raw))
            ds, _report = deidentify_dataset(ds, key=key)
            out = dicom_bytes(ds)
            bar.advance(task)
        elapsed = time.perf_counter() - started
    assert len(out) > 7_000_000
    rate = images / elapsed
    console.print(f"dicom de-identification: {images} RG1 images in {elapsed:.2f} s = {rate:.1f} images/s")
    return rate


def main() -> None:
    faulthandler.enable()  # a crash in a native library (librdkafka, numpy) prints every thread's stack
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()
    console = Console(stderr=True)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    csv_rate = csv_route(args.rows, console)
    deid_rate = dicom_deid(args.images, console)
    print(
        json.dumps(
            {
                "csv_route_rows_per_s": round(csv_rate),
                "dicom_deid_per_s": round(deid_rate, 1),
                "rows": args.rows,
                "images": args.images,
            }
        )
    )


if __name__ == "__main__":
    main()
