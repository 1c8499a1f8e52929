"""X-ray pipeline benchmark, embedded shape, on this machine.

    .venv/bin/python bench/xray_pipeline.py [--images N] [--rate R] [--latency-seconds S] [--size PX]

1. **Saturation**: N generated images (80% normal / 20% pneumonia, a quarter of them DICOM, the rest PNG)
   are put into ``xray-images`` as fast as one uploader can; the clock stops when every image has its result
   row *and* its anonymized object — the whole pipeline (notification, risk-assessment function, results DB,
   result event, de-identification route), not the function alone.
2. **Latency** at a fixed lower rate R for S seconds: put → result row, p50 and p99.
3. **Bare baseline** (``bench/xray_bare.py``): the same N images through the same work — the app's own
   decode, text redaction, model, annotation, PNG encoding, results row, DICOM de-identification and pixel
   redaction, two object files written — in one plain process per core, with no platform at all.
4. **Raw model**: the same ONNX model through onnxruntime on the same decoded images, batched (64), including
   the model input (downsample + standardize) — the physical limit of the model here.

By default the function runs in a ``kawa worker`` process and the route in ``kawa routes run``, on the same
embedded log and local store as this process (which uploads): three processes, so the pipeline is not bound by
one interpreter lock; ``--in-process`` runs everything as threads of this process, as ``kawa demo xray`` does.
A model is trained first (``kawa.apps.xray.train``, 600 images) into a temporary home. Progress goes to stderr;
the last line of stdout is JSON: ``pipeline_images_per_s``, ``raw_model_images_per_s``, ``overhead_ratio``
(raw / pipeline), ``bare_images_per_s``, ``platform_overhead`` (bare / pipeline images/s), ``p50_ms``,
``p99_ms``, ``cpu_ms_per_image`` (CPU time of all the pipeline's processes per image during the saturation run:
what bounds the throughput on idle cores), ``bare_cpu_ms_per_image``, ``platform_cpu_overhead`` (pipeline / bare
CPU per image: the ratio that does not depend on how busy the machine is), ``mode``, ``fsync`` and
``load_average`` (1-minute, at the end).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from kawa.apps.xray.generator import EXTENSIONS, Generator, Prepared
from kawa.apps.xray.imaging import decode, model_input
from kawa.apps.xray.results import percentile
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.stack import XrayStack
from kawa.config import KawaConfig, load_config
from kawa.store import iter_objects

console = Console(stderr=True)


def pool(settings: XraySettings, n: int, seed: int) -> list[Prepared]:
    generator = Generator(settings, folder="/nonexistent", seed=seed)
    return [generator.prepare() for _ in range(n)]


CHILDREN: list[subprocess.Popen[bytes]] = []


def cpu_s() -> float:
    """CPU seconds of this process and of the worker processes it started."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    for child in CHILDREN:
        try:
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


@contextmanager
def deployment(config: KawaConfig, settings: XraySettings, home: Path, processes: bool) -> Iterator[XrayStack]:
    """The embedded pipeline: everything in this process, or (``processes``) the function in a ``kawa worker``
    and the route in ``kawa routes run``, on the same embedded log and local store (this process uploads)."""
    if not processes:
        with XrayStack(config, settings) as stack:
            yield stack
        return
    from kawa.apps.xray.deid import ROUTE_ID, deid_route_yaml

    with XrayStack(config, settings, host=False, route=False) as stack:
        routes = home / "routes.yaml"
        routes.write_text(deid_route_yaml(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAWA_")}
        env["KAWA_HOME"] = str(home)
        kawa = str(Path(sys.executable).parent / "kawa")
        argvs = [
            [kawa, "worker", "--app", "kawa.apps.xray.pipeline:app"],
            [kawa, "routes", "run", ROUTE_ID, "--file", str(routes)],
        ]
        for argv in argvs:
            CHILDREN.append(
                subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        try:
            yield stack
        finally:
            for child in CHILDREN:
                child.terminate()
            for child in CHILDREN:
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    child.kill()
            CHILDREN.clear()


def saturation(stack: XrayStack, items: list[Prepared], images: int, uploaders: int) -> tuple[float, float, float]:
    """(images/s until every result row and anonymized object exists, put-side images/s, CPU ms per image).
    ``uploaders`` threads put concurrently, as several scanners would."""
    generator = Generator(stack.settings, store=stack.store, prefix="sat/")
    start, wall_start, cpu_start = time.perf_counter(), time.time(), cpu_s()

    def upload(worker: int) -> None:
        for i in range(worker, images, uploaders):
            generator.upload(items[i % len(items)])

    threads = [threading.Thread(target=upload, args=(w,)) for w in range(uploaders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    put_s = time.perf_counter() - start
    finished_at = wait_finished(stack, "sat/", images)
    return images / (finished_at - wall_start), images / put_s, (cpu_s() - cpu_start) * 1000 / images


def file_count(stack: XrayStack, bucket: str, prefix: str) -> int:
    """Objects under ``prefix`` in a local store bucket, from the directory tree alone."""
    return sum(1 for key, _ in stack.store.iter_files(bucket) if key.startswith(prefix))


def wait_finished(stack: XrayStack, prefix: str, images: int, timeout: float = 600.0) -> float:
    """Wall-clock time at which the last of ``images`` got its result row and anonymized object (read from
    the row times and object modification times, so the polling here adds no error and little load)."""
    s = stack.settings
    deadline = time.monotonic() + timeout
    # One cheap query, then (once every row is there) a directory walk without a head per object: the
    # polling must not compete with the pipeline it measures.
    while stack.results.count(prefix) < images or file_count(stack, s.anonymized_bucket, prefix) < images:
        if time.monotonic() > deadline:
            raise SystemExit(f"pipeline did not finish in {timeout:g} s: {stack.counts(prefix)}")
        time.sleep(0.5)
    last_row = max(r.time for r in stack.results.rows() if r.object_key.startswith(prefix))
    last_anon = max(
        o.last_modified.timestamp() for o in iter_objects(stack.store, s.anonymized_bucket, prefix) if o.last_modified
    )
    return max(last_row, last_anon)


def latency(stack: XrayStack, items: list[Prepared], rate: float, seconds: float) -> tuple[float, float, int]:
    """p50, p99 (ms) of put → result row at ``rate`` images/s."""
    generator = Generator(stack.settings, store=stack.store, prefix="lat/")
    stop = threading.Event()
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        due = start + sent / rate
        if due > time.monotonic():
            stop.wait(due - time.monotonic())
        generator.upload(items[sent % len(items)])
        sent += 1
    wait_finished(stack, "lat/", sent)
    put_time = {u.key: u.put_time for u in generator.uploads}
    delays = sorted((r.time - put_time[r.object_key]) * 1000 for r in stack.results.rows() if r.object_key in put_time)
    return percentile(delays, 50) or 0.0, percentile(delays, 99) or 0.0, sent


def model_dir(config: KawaConfig, settings: XraySettings) -> Path:
    """The local directory of the version ``settings.model_ref`` names (what the function loads)."""
    from kawa.ml.registry import Registry

    registry = Registry(config, publish=False)
    try:
        return registry.local_path(settings.model_name, registry.resolve(settings.model_ref))
    finally:
        registry.close()


def bare(
    config: KawaConfig, settings: XraySettings, items: list[Prepared], images: int, work: Path
) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the bare baseline (bench/xray_bare.py): one plain process per core,
    the same work."""
    from xray_bare import run_bare

    return run_bare(
        [(f"image{EXTENSIONS[item.fmt]}", item.body) for item in items],
        images,
        model_dir=model_dir(config, settings),
        work=work,
        fsync=config.store.fsync,
        settings=settings.model_dump(mode="json"),
    )


def raw_model(config: KawaConfig, settings: XraySettings, items: list[Prepared], seconds: float = 3.0) -> float:
    """Batched onnxruntime images/s on the decoded images (model input included)."""
    import onnxruntime as ort

    onnx_file = next(model_dir(config, settings).rglob("*.onnx"))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    decoded = [decode(item.body) for item in items]
    batch = 64
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [decoded[(done + i) % len(decoded)] for i in range(batch)]
        x = np.stack([model_input(p, settings.model_input_size) for p in chunk])
        session.run(None, {"input": x})
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    faulthandler.enable()  # a crash in a native library (librdkafka, numpy) prints every thread's stack
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images for the saturation run")
    parser.add_argument("--rate", type=float, default=20.0, help="images/s for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--pool", type=int, default=64, help="distinct generated images, cycled")
    parser.add_argument("--uploaders", type=int, default=4, help="threads putting images in the saturation run")
    parser.add_argument("--no-fsync", action="store_true", help="store.fsync off (default config: on)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the function and the route as threads of this process (default: a kawa worker process and a "
        "kawa routes run process on the same embedded log)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    settings = XraySettings(image_size=args.size, partitions=4)
    with tempfile.TemporaryDirectory(prefix="kawa-xray-bench-") as tmp:
        store = {"fsync": False} if args.no_fsync else {}
        home = Path(tmp) / ".kawa"
        config = load_config(env={}, home=str(home), store=store)
        from kawa.apps.xray.train import train

        with console.status("training the model (600 generated images)"):
            trained = train(images=600, config=config, progress=None)
        console.print(f"model v{trained['version']}: held-out AUC {trained['auc']:.3f}")
        with console.status(f"generating {args.pool} images ({args.size} px)"):
            items = pool(settings, args.pool, seed=99)
        sizes = [len(i.body) for i in items]
        console.print(
            f"{sum(i.fmt == 'dicom' for i in items)} DICOM / {sum(i.fmt == 'png' for i in items)} PNG, "
            f"mean {np.mean(sizes) / 1024:.0f} KiB"
        )
        mode = "in-process" if args.in_process else "processes"
        with deployment(config, settings, home, processes=not args.in_process) as stack:
            with console.status("warming up (processes, model load, first events)"):
                warm = Generator(settings, store=stack.store, prefix="warm/")
                for item in items[:8]:
                    warm.upload(item)
                wait_finished(stack, "warm/", 8)
            with console.status(f"saturation: {args.images} images"):
                pipeline_ips, put_ips, cpu_ms = saturation(stack, items, args.images, args.uploaders)
            console.print(
                f"pipeline: {pipeline_ips:.1f} images/s at saturation (puts alone {put_ips:.0f}/s); "
                f"{cpu_ms:.1f} ms of CPU per image (upload, function, route, notifications) — {mode}, "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
            )
            with console.status(f"latency at {args.rate:g} images/s for {args.latency_seconds:g} s"):
                p50, p99, sent = latency(stack, items, args.rate, args.latency_seconds)
            console.print(f"latency at {args.rate:g}/s ({sent} images): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        with console.status(f"bare baseline: {args.images} images, {os.cpu_count()} plain processes"):
            bare_ips, bare_cpu_ms = bare(config, settings, items, args.images, Path(tmp) / "bare")
        console.print(
            f"bare baseline (one plain process per core, same work, no platform): {bare_ips:.1f} images/s, "
            f"{bare_cpu_ms:.1f} ms of CPU per image → platform overhead {bare_ips / pipeline_ips:.2f}x "
            f"(CPU {cpu_ms / bare_cpu_ms:.2f}x); load average {os.getloadavg()[0]:.1f}"
        )
        with console.status("raw model throughput"):
            raw_ips = raw_model(config, settings, items)
        console.print(f"raw model (onnxruntime, batch 64, model input included): {raw_ips:.0f} images/s")
    result: dict[str, Any] = {
        "pipeline_images_per_s": round(pipeline_ips, 1),
        "raw_model_images_per_s": round(raw_ips, 1),
        "overhead_ratio": round(raw_ips / pipeline_ips, 2),
        "bare_images_per_s": round(bare_ips, 1),
        "platform_overhead": round(bare_ips / pipeline_ips, 2),
        "bare_cpu_ms_per_image": round(bare_cpu_ms, 1),
        "platform_cpu_overhead": round(cpu_ms / bare_cpu_ms, 2),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "cpu_ms_per_image": round(cpu_ms, 1),
        "mode": mode,
        "fsync": not args.no_fsync,
        "load_average": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
