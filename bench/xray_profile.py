"""Where the X-ray pipeline spends its time beyond the work: a sampling profile of the in-process pipeline.

    .venv/bin/python bench/xray_profile.py [--images N] [--size PX] [--interval-ms MS] [--top K]

Runs the pipeline as ``kawa demo xray`` does (function and route as threads of one process, embedded log,
local store), uploads N images as fast as one thread can, and samples every thread's Python stack every
``--interval-ms`` (``sys._current_frames``, as py-spy does from outside) until every image has its result
row and anonymized object. Each sample is weighted by the CPU time its thread used since the
previous sample (the thread's own CPU clock, ``pthread_getcpuclockid``; a parked thread weighs nothing) and
charged to one category by its innermost recognised frame — the work (decode, text detection, redaction,
model, PNG, DICOM), the store, the log, events/JSON, results DB, the function host or the route runtime — and to its
innermost functions. Stderr gets the tables; the last stdout line is JSON with the category shares.

The CPU a thread used in an interval is charged to the stack it is in at the interval's end: with a 2 ms
interval and calls of a few ms, shares are right to a few percent, not per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

from rich.console import Console

console = Console(stderr=True)

CATEGORIES: tuple[tuple[str, str], ...] = (
    ("kawa/routes/textdetect", "work: text detection"),
    ("kawa/routes/redact", "work: pixel redaction"),
    ("kawa/routes/deid", "work: DICOM de-identification"),
    ("pydicom/", "work: DICOM read/write"),
    ("kawa/apps/xray/imaging", "work: decode/annotate/PNG"),
    ("kawa/apps/xray/dicom", "work: decode/annotate/PNG"),
    ("PIL/", "work: decode/annotate/PNG"),
    ("kawa/ml/", "model + prediction log"),
    ("kawa/apps/xray/results", "results DB"),
    ("sqlalchemy/", "results DB"),
    ("kawa/store/", "store (put/get, sidecars, notifications)"),
    ("kawa/log/", "log (produce/consume/commit)"),
    ("kawa/events", "events/JSON"),
    ("cloudevents/", "events/JSON"),
    ("json/", "events/JSON"),
    ("kawa/functions/", "function host"),
    ("kawa/routes/", "route runtime"),
    ("kawa/apps/xray/generator", "uploader"),
)


def category(frame: FrameType | None) -> str:
    """The category of the innermost frame of ``frame``'s stack that one names; ``other`` when none does."""
    while frame is not None:
        path = frame.f_code.co_filename
        for fragment, name in CATEGORIES:
            if fragment in path:
                return name
        frame = frame.f_back
    return "other"


class Sampler(threading.Thread):
    def __init__(self, interval_s: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.categories: Counter[str] = Counter()
        self.leaves: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.cpu_ns = 0

    def run(self) -> None:
        me = threading.get_ident()
        last: dict[int, int] = {}
        while not self.stop.wait(self.interval_s):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                try:
                    now = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
                except OSError:  # the thread ended meanwhile
                    continue
                used = now - last.get(ident, now)
                last[ident] = now
                if used <= 0:
                    continue  # parked (a wait, a poll, a sleep): no CPU since the last sample
                self.cpu_ns += used
                self.categories[category(frame)] += used
                code = frame.f_code
                self.leaves[f"{Path(code.co_filename).name}:{code.co_name}"] += used
                seen = set()
                f: FrameType | None = frame
                while f is not None:
                    name = f"{Path(f.f_code.co_filename).name}:{f.f_code.co_name}"
                    if name not in seen:
                        seen.add(name)
                        self.inclusive[name] += used
                    f = f.f_back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sys.path.insert(0, str(Path(__file__).parent))
    from kawa.apps.xray.generator import Generator
    from kawa.apps.xray.settings import XraySettings
    from kawa.apps.xray.stack import XrayStack
    from kawa.apps.xray.train import train
    from kawa.config import load_config
    from xray_pipeline import pool, wait_finished

    settings = XraySettings(image_size=args.size, partitions=4)
    with tempfile.TemporaryDirectory(prefix="kawa-xray-profile-") as tmp:
        config = load_config(env={}, home=str(Path(tmp) / ".kawa"))
        train(images=300, config=config, progress=None)
        items = pool(settings, 32, seed=99)
        with XrayStack(config, settings) as stack:
            warm = Generator(settings, store=stack.store, prefix="warm/")
            for item in items[:8]:
                warm.upload(item)
            wait_finished(stack, "warm/", 8)
            sampler = Sampler(args.interval_ms / 1000)
            sampler.start()
            start, cpu = time.perf_counter(), time.process_time()
            generator = Generator(settings, store=stack.store, prefix="prof/")
            for i in range(args.images):
                generator.upload(items[i % len(items)])
            wait_finished(stack, "prof/", args.images)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            sampler.stop.set()
            sampler.join()
    total = max(1, sampler.cpu_ns)
    console.print(f"{args.images} images in {wall:.1f} s ({args.images / wall:.1f}/s), "
                  f"{cpu * 1000 / args.images:.1f} ms CPU per image, {sampler.cpu_ns / 1e9:.1f} s of thread CPU "
                  "sampled (shares below are of it)")
    for title, counter in (("category", sampler.categories), ("inclusive", sampler.inclusive),
                           ("leaf", sampler.leaves)):
        console.print(f"\n[bold]{title}[/bold]")
        for name, n in counter.most_common(args.top):
            console.print(f"  {100 * n / total:5.1f}%  {name}")
    shares = {name: round(100 * n / total, 1) for name, n in sampler.categories.most_common()}
    print(json.dumps({
        "images_per_s": round(args.images / wall, 1),
        "cpu_ms_per_image": round(cpu * 1000 / args.images, 1),
        "shares_pct": shares,
    }))


if __name__ == "__main__":
    main()
