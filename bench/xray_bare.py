"""The X-ray pipeline's work with no platform: the bare baseline of ``bench/xray_pipeline.py``.

One plain process per core (``multiprocessing``, spawn) does, per image, what the ``risk-assessment``
function and the de-identification route do — by calling the same library functions:

- the function's part (:func:`assess`): read the upload, :func:`~kawa.apps.xray.imaging.decode`,
  :func:`~kawa.apps.xray.imaging.redact_text`, :func:`~kawa.apps.xray.imaging.model_input`, the same ONNX model
  loaded by :func:`kawa.ml.loaders.load_model_dir` (batch of one, as the function calls it),
  :func:`~kawa.apps.xray.imaging.annotate` + :func:`~kawa.apps.xray.imaging.encode_png`, the annotated object
  written, a :class:`~kawa.apps.xray.results.ResultRow` inserted with :class:`~kawa.apps.xray.results.ResultsDB`;
- the route's part (:func:`deidentify`): for a DICOM, ``read_dicom`` → ``deidentify_dataset`` (PS3.15 basic
  profile) → ``apply_to_dataset`` (detected text blacked out) → ``dicom_bytes``; for a PNG,
  ``apply_to_image_bytes``; the anonymized object written.

An object is written as the local store writes its file — a temporary file in the store, ``fsync`` when the
store's ``fsync`` is on, ``os.replace`` into place — without the store's sidecar or notification (those are
the platform's bookkeeping, part of what the comparison measures). What the baseline leaves out, by design:
the upload (``put`` into ``xray-images``: the baseline reads files already on disk), notifications, the log,
consumer groups, CloudEvents, the result and prediction events, retries and dead letters.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

DEID_KEY = b"kawa-bench-bare-baseline-key-32b"
"""The route's keyed-hash secret stands in for ``<home>/routes/keys/default.key`` (same length, same work)."""


@dataclass(frozen=True)
class BareJob:
    """What one baseline process needs: the input files, its share of them, where to write."""

    inputs: tuple[str, ...]
    images: int
    worker: int
    workers: int
    model_dir: str
    out_dir: str
    results_url: str
    fsync: bool
    settings: dict[str, Any]
    """The app's :class:`~kawa.apps.xray.settings.XraySettings`, as data (pickled to a spawned process)."""


def write_object(root: Path, bucket: str, key: str, data: bytes, fsync: bool) -> None:
    """As the local store writes an object's file: temporary file, fsync (when on), atomic rename."""
    path = root / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root / ".tmp", prefix="put-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)


class Bare:
    """One process's state: the loaded model, the results DB, the redaction plan."""

    def __init__(self, job: BareJob) -> None:
        from kawa.apps.xray.results import ResultsDB
        from kawa.apps.xray.settings import XraySettings
        from kawa.ml.loaders import load_model_dir
        from kawa.routes.redact import RedactPlan

        self.job = job
        self.model = load_model_dir(Path(job.model_dir))
        self.db = ResultsDB(job.results_url)
        self.settings = s = XraySettings(**job.settings)
        self.plan = RedactPlan(detect=True, margin_px=s.redact_margin_px, mode="black")  # the route's step
        self.root = Path(job.out_dir)
        (self.root / ".tmp").mkdir(parents=True, exist_ok=True)

    def assess(self, key: str, data: bytes) -> None:
        """The ``risk-assessment`` function's work on one image (see kawa.apps.xray.pipeline)."""
        import numpy as np

        from kawa.apps.xray.imaging import annotate, decode, encode_png, model_input, redact_text
        from kawa.apps.xray.pipeline import processed_key
        from kawa.apps.xray.results import ResultRow

        started = time.perf_counter()
        pixels = decode(data)
        clean = redact_text(pixels, self.settings.redact_margin_px)
        x = model_input(clean, self.settings.model_input_size)[None, :]
        if self.model.input.dtype is not None and x.dtype != self.model.input.dtype:
            x = x.astype(self.model.input.dtype)
        risk = float(np.asarray(self.model.predict(x))[0])
        label = self.settings.label_for(risk)
        out_key = processed_key(key)
        write_object(self.root, "processed", out_key, encode_png(annotate(clean, label, risk, "generated images")),
                     self.job.fsync)
        now = time.time()
        self.db.record(
            ResultRow(
                time=now, bucket="incoming", object_key=key, processed_key=out_key, model_name="bare",
                model_version=1, risk=risk, label=label, latency_ms=(time.perf_counter() - started) * 1000,
                e2e_ms=None, event_id=f"bare#{key}",
            )
        )  # fmt: skip

    def deidentify(self, key: str, data: bytes) -> None:
        """The de-identification route's work on one image (see kawa.apps.xray.deid)."""
        from kawa.routes.deid import deidentify_dataset
        from kawa.routes.message import dicom_bytes
        from kawa.routes.processors.imaging import read_dicom
        from kawa.routes.redact import apply_to_dataset, apply_to_image_bytes

        if data[128:132] == b"DICM":
            ds, _ = deidentify_dataset(read_dicom(data), key=DEID_KEY, profile="basic")
            apply_to_dataset(ds, self.plan)
            out = dicom_bytes(ds)
        else:
            out, _, _ = apply_to_image_bytes(data, self.plan)
        write_object(self.root, "anonymized", key, out, self.job.fsync)

    def run(self, key: str, source: str) -> None:
        data = Path(source).read_bytes()  # the fetch: both parts read the upload, as the pipeline does
        self.assess(key, data)
        self.deidentify(key, Path(source).read_bytes())


def _worker(job: BareJob, ready: Any, go: Any, done: Any) -> None:
    bare = Bare(job)
    bare.run(f"warm/{job.worker}", job.inputs[0])  # imports, the model's first run, the DB's first insert
    ready.put(job.worker)
    go.wait()
    start, cpu = time.time(), time.process_time()
    for i in range(job.worker, job.images, job.workers):
        bare.run(f"bare/{i:06d}", job.inputs[i % len(job.inputs)])
    done.put((start, time.time(), time.process_time() - cpu))
    bare.db.close()


def _gather(queue: Any, procs: list[Any], timeout: float) -> list[Any]:
    """One item per process from ``queue``; fails at once, with the exit code, when a process dies first
    (its traceback is on stderr) rather than waiting out ``timeout``."""
    items: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(items) < len(procs):
        try:
            items.append(queue.get(timeout=1))
        except Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a bare worker exited with code {dead[0]}: see its traceback above") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare workers sent {len(items)} of {len(procs)} in {timeout:.0f} s") from None
    return items


def run_bare(
    items: list[tuple[str, bytes]],
    images: int,
    *,
    model_dir: Path,
    work: Path,
    fsync: bool,
    settings: dict[str, Any],
    processes: int | None = None,
) -> tuple[float, float]:
    """(images/s, CPU ms per image) of ``processes`` (default: one per core) plain processes doing the
    pipeline's work on
    ``images`` images (``items`` cycled: ``(name, bytes)``), from the moment all are ready until the last
    finishes. Process start, imports and model load are outside the clock, as the pipeline's warm-up is."""
    workers = processes or os.cpu_count() or 1
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (name, body) in enumerate(items):
        path = inputs / f"{n:04d}-{name}"
        path.write_bytes(body)
        paths.append(str(path))
    ctx = mp.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    jobs = [
        BareJob(tuple(paths), images, w, workers, str(model_dir), str(work / "store"),
                f"sqlite:///{work / 'results.db'}", fsync, settings)
        for w in range(workers)
    ]  # fmt: skip
    procs = [ctx.Process(target=_worker, args=(job, ready, go, done), daemon=True) for job in jobs]
    for proc in procs:
        proc.start()
    try:
        _gather(ready, procs, 300)
        go.set()
        spans = _gather(done, procs, 1800)
    finally:
        for proc in procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()
    start = min(s for s, _, _ in spans)
    end = max(e for _, e, _ in spans)
    return images / (end - start), sum(c for _, _, c in spans) * 1000 / images
