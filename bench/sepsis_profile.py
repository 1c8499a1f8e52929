"""Where the sepsis pipeline's time goes: the day's first hours through the app, every function thread under
cProfile, in one process.

    .venv/bin/python bench/sepsis_profile.py --patients 100 --hours 12

A fresh embedded platform, the LightGBM score trained there on ``--train-patients`` admissions, the app
started with its functions; then the Bundles of ``--patients`` x ``--hours`` are written to the observations
topic up front (the publisher is not measured) and the functions drain them. The clock starts once
``--warm`` Bundles were scored (the model loaded, the first batches done: a start-up cost, not a per-Bundle
one). Prints the wall and CPU time per Bundle, the top functions by cumulative and own time across the host's
threads (``--top``), and, last, a JSON line (``bundles``, ``drain_wall_s``, ``bundles_per_s``,
``cpu_ms_per_bundle``, ``load_avg``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _profiled_threads() -> list[cProfile.Profile]:
    """Profile every thread started from now on (each gets its own profiler, merged at the end)."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(_frame: Any, _event: str, _arg: Any) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        sys.setprofile(None)
        profile.enable()

    threading.setprofile(start)
    return profiles


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread since it started, summed by name with the replica serial and the
    worker index dropped (``kawa-fn-score-r1-0`` → ``kawa-fn-score-r``), read from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = thread.name.rstrip("0123456789-").rstrip("0123456789")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--hours", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--train-patients", type=int, default=300)
    ap.add_argument("--top", type=int, default=45)
    ap.add_argument("--no-profile", action="store_true", help="time the drain only")
    ap.add_argument("--warm", type=int, default=300, help="Bundles scored before the clock starts")
    a = ap.parse_args()
    import logging

    import sepsis as bench  # bench/sepsis.py: the same platform and settings
    from kawa.apps.plugin import declared
    from kawa.apps.runtime import start_app
    from kawa.apps.sepsis.app_settings import SepsisSettings
    from kawa.apps.sepsis.care import respond
    from kawa.apps.sepsis.cohort import make_patients
    from kawa.apps.sepsis.demo import Tally, publish_block
    from kawa.apps.sepsis.plugin import plugin
    from kawa.apps.sepsis.settings import SimSettings
    from kawa.apps.sepsis.sim import iter_blocks
    from kawa.apps.sepsis.train import train

    logging.getLogger("kawa").setLevel(logging.WARNING)
    args = argparse.Namespace(fhir_validate=False, block_min=60.0, corrupt=0.0, patients=a.patients, hours=a.hours,
                              seed=a.seed, train_patients=a.train_patients)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="kawa-sepsis-profile-") as tmp:
        platform = bench._platform(Path(tmp) / ".kawa")
        try:
            s0 = declared(plugin, bench._settings(args)).settings
            result = train(patients=a.train_patients, config=platform.config, settings=s0, threshold=True)
            section = bench._settings(args, float(result["threshold"]))
            s: SepsisSettings = declared(plugin, section).settings
            # topics first, no functions: the Bundles wait on the log, then the functions drain them
            start_app(platform, plugin, section, functions=False).stop()
            platform.apps.pop(plugin.name)
            sim = SimSettings(patients=a.patients, hours=a.hours, seed=a.seed)
            patients = make_patients(sim)
            aliases = bench._aliases(s, len(patients))
            tally, producer = Tally(), platform.log.producer()
            for block in iter_blocks(patients, sim, respond(patients, sim, None), 1.0, t1=a.hours):
                publish_block(producer, s, block, np.random.default_rng(a.seed + 1), tally, aliases)
            producer.flush()
            producer.close()
            profiles = [] if a.no_profile else _profiled_threads()
            start_app(platform, plugin, section)

            def done() -> int:
                return int(bench._ends(platform, s.scores_topic) + bench._ends(platform, s.dead_letter_topic))

            while (n0 := done()) < min(a.warm, tally.messages - 1):
                time.sleep(0.02)  # a benchmark's poll interval: it waits on the counts above
            cpu0, began = time.process_time(), time.perf_counter()
            while done() < tally.messages:
                time.sleep(0.05)
            wall, cpu = time.perf_counter() - began, time.process_time() - cpu0
            by_thread = _thread_cpu()
            threading.setprofile(None)  # type: ignore[arg-type]
            for p in profiles:
                p.disable()
        finally:
            platform.stop()
    if profiles:
        out = io.StringIO()
        stats = pstats.Stats(profiles[0], stream=out)
        for p in profiles[1:]:
            stats.add(p)
        stats.sort_stats("cumulative").print_stats(a.top)
        stats.sort_stats("tottime").print_stats(a.top)
        print(out.getvalue())
    n = tally.messages - n0
    total = sum(by_thread.values())
    print(f"CPU by thread (since the app started, warm-up included; {total:.1f} s in all, "
          f"{total / tally.messages * 1000:.2f} ms per Bundle):")
    for name, seconds in sorted(by_thread.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / tally.messages * 1000:6.2f} ms/Bundle {100 * seconds / max(total, 1e-9):5.1f} %  {name}")
    print(f"{n} Bundles ({tally.observations} observations) drained in {wall:.1f} s: {n / wall:.1f} Bundles/s, "
          f"{cpu / n * 1000:.2f} ms CPU and {wall / n * 1000:.2f} ms wall per Bundle"
          f"{' (under cProfile: slower)' if profiles else ''}")
    print(json.dumps({"bundles": n, "observations": tally.observations, "drain_wall_s": round(wall, 2),
                      "bundles_per_s": round(n / wall, 1), "cpu_ms_per_bundle": round(cpu / n * 1000, 2),
                      "profiled": bool(profiles), "load_avg": round(os.getloadavg()[0], 1),
                      "cores": os.cpu_count(), "hours": a.hours if math.isfinite(a.hours) else None}))


if __name__ == "__main__":
    main()
