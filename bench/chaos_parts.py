"""The chaos harness's parts (``bench/chaos.py``): the crashable processes, the paced uploader, the watch on
the output buckets and the log readers."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from kawa.apps.xray.generator import Generator, Prepared
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.stack import XrayStack
from kawa.apps.xray.synth import CONTENT_TYPES, EXTENSIONS
from kawa.errors import KawaError
from kawa.log.base import EventLog, Record
from kawa.store import iter_objects

console = Console(stderr=True)


class Processes:
    """The pipeline's worker and route processes, each SIGKILLable and restarted at once."""

    def __init__(self, workdir: Path, argvs: list[list[str]]) -> None:
        self.workdir, self.argvs = workdir, argvs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KAWA_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.procs: list[subprocess.Popen[bytes]] = [self._spawn(i) for i in range(len(argvs))]
        self.restarts = 0  # after our SIGKILLs
        self.crashes = 0  # after exits of their own (e.g. a worker that could not reach the broker at start)

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"proc-{i}.log", "ab") as out:
            return subprocess.Popen(self.argvs[i], cwd=self.workdir, env=self.env, stdout=out, stderr=out)

    def log_text(self, i: int) -> str:
        return (self.workdir / f"proc-{i}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        marks = ("kawa worker ready", "running —")
        while not all(any(m in self.log_text(i) for m in marks) for i in range(len(self.procs))):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise KawaError(f"{' '.join(self.argvs[i][1:3])} exited at start:\n{self.log_text(i)[-3000:]}")
            if time.monotonic() > deadline:
                raise KawaError("the pipeline's processes were not ready within {timeout:g} s")
            time.sleep(0.2)

    def supervise(self) -> None:
        """Start again a process that exited on its own (as a supervisor would, e.g. Kubernetes)."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.procs[i] = self._spawn(i)
                self.crashes += 1

    def kill_and_restart(self, i: int) -> None:
        proc = self.procs[i]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        self.procs[i] = self._spawn(i)
        self.restarts += 1

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class Uploads:
    """What the uploader put: key → damaged?, and the keys whose notification failed."""

    damaged: dict[str, bool] = field(default_factory=dict)
    unnotified: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def prepared_items(settings: XraySettings, images: int, seed: int) -> list[Prepared]:
    generator = Generator(settings, store=object(), seed=seed)
    n_bad = min(images, max(2, images // 20))
    items = [generator.prepare() for _ in range(images - n_bad)]
    for i in range(n_bad):
        good = generator.prepare("dicom" if i % 2 else "png")
        bad = generator.corrupted(good) if i % 2 else Prepared(b"this is not an image", "png", good.image, True)
        items.append(bad)
    random.Random(seed).shuffle(items)
    return items


def upload_all(stack: XrayStack, items: list[Prepared], rate: float, out: Uploads, done: threading.Event) -> None:
    from kawa.errors import NotificationPending

    start = time.monotonic()
    for i, item in enumerate(items):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the uploads, not waiting for a condition
        key = f"chaos/{i:05d}{EXTENSIONS[item.fmt]}"
        with out.lock:
            out.damaged[key] = item.corrupt
        while True:
            try:
                stack.store.put(stack.settings.incoming_bucket, key, item.body, content_type=CONTENT_TYPES[item.fmt])
            except NotificationPending:
                with out.lock:
                    out.unnotified.append(key)  # stored; the store's outbox publishes it once the log is back
            except KawaError as exc:
                console.print(f"upload {key} failed ({exc}); retrying")
                time.sleep(0.5)
                continue
            break
    done.set()


class VersionWatch:
    """Polls the output buckets and keeps, per key, every content (etag) and write (sequencer) it saw."""

    def __init__(self, stack: XrayStack) -> None:
        self.stack = stack
        self.etags: dict[tuple[str, str], set[str]] = {}
        self.writes: dict[tuple[str, str], set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-version-watch", daemon=True)

    def scan(self) -> None:
        s = self.stack.settings
        for bucket in (s.processed_bucket, s.anonymized_bucket):
            for info in iter_objects(self.stack.store, bucket, "chaos/"):
                self.etags.setdefault((bucket, info.key), set()).add(info.etag)
                self.writes.setdefault((bucket, info.key), set()).add(info.sequencer or info.etag)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(KawaError, OSError):  # an object replaced while listed: seen next scan
                self.scan()

    def __enter__(self) -> VersionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.scan()


def read_all(log: EventLog, topic: str, expect: int, timeout: float = 60.0) -> list[Record]:
    """Every record of ``topic`` from the start, through a fresh group, until ``expect`` arrived."""
    consumer = log.consumer(f"chaos-read-{uuid.uuid4().hex[:8]}", [topic], auto_offset_reset="earliest")
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expect and time.monotonic() < deadline:
            records += consumer.poll(timeout=0.5, max_records=1000)
    finally:
        consumer.close()
    return records


def record_text(record: Record) -> str:
    parts: list[Any] = [record.key or b"", record.value or b""] + [v for _, v in record.headers]
    return " ".join(p.decode("latin-1") if isinstance(p, bytes) else str(p) for p in parts)


def group_lag(log: EventLog, groups: list[str], topic: str) -> int:
    total = 0
    for group in groups:
        lags = log.lag(group, [topic])
        if not lags:
            return -1  # the group has not joined or committed yet
        total += sum(p.lag for p in lags)
    return total
