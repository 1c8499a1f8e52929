"""Monitoring benchmark (issue 13): the sequential drift detector's throughput, memory and detection, side by side
with river's ADWIN, KSWIN and PageHinkley and with Kawa's windowed detector, on the same seeded streams.

    PYTHONPATH=src .venv/bin/python bench/monitor.py [--seeds 20] [--records 100000] [--tail 3000]
        [--stationary 10000000] [--throughput 1000000] [--arl0 2e6] [--no-rss] [--no-windowed] [--peers]

- **Throughput**: records/s of ``SequentialDetector.step`` with 20 numeric N(0,1) features in batches of 10,000
  records, one thread (the data is generated beforehand and not timed). RSS at 1M and at 10M records: a fresh
  subprocess each streams that many records through the detector, generating them batch by batch, and reports
  its peak RSS.
- **Detection**, per seed: 20 N(0,1) features; ``--records`` stationary records, then ``--tail`` records where one
  feature (drawn per seed) is shifted by 0.5 or 1 standard deviation. The detectors see the stationary records
  once and continue from their state into each tail. Delay = records from the shift to the first alert on *any*
  feature (the same protocol for every detector; river's detectors run one per feature). False alarms = alerts
  before the shift, per 10^6 records (of 20 features), plus ``--stationary`` more stationary records for Kawa.
  KSWIN costs about 160 us per update, so it runs on the shifted feature only: on the last ``--kswin-prefix``
  stationary records and the tail; its false-alarm rate per 10^6 records of 20 features is scaled from those.
- **ADWIN at a matched false-alarm rate**: river's default ``delta = 0.002`` raises about 13 false alarms per 10^6
  records here; ``--adwin-matched-delta`` (default 1e-4) runs ADWIN a second time at a rate like Kawa's budget.
- **Windowed detector** (Kawa's ``DriftDetector``, KS on sliding windows of 200 records sliding by 50, ARL0 = 1000
  windows, effect gate 0.1): on the last ``--windowed-prefix`` stationary records and the tails.
- **Peers** (Evidently, NannyML) need their own virtualenv; not implemented here: their keys are null.

Progress goes to stderr; the last line of stdout is JSON with ``records_per_s``, ``rss_mb_1m``, ``rss_mb_10m``,
``evidently_s``, ``nannyml_s``, ``kawa_s``, ``max_stat_diff``, ``delay_05sigma``, ``delay_1sigma``,
``false_alarms_per_1e6``, ``river_adwin_delay_05sigma``, ``river_kswin_false_alarms_per_1e6``,
``cbpe_abs_err_auroc`` and more detail.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kawa.monitor import Alert, DetectorState, Profile, Windows, WindowState, build_profile, calibrate
from kawa.monitor.sequential import (
    Mode,
    SequentialAlert,
    SequentialDetector,
    SequentialState,
    calibrate_sequential,
)

F = 20
SHIFTS = (0.5, 1.0)
BATCH = 10_000
ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def reference(seed: int = 12345, n: int = 100_000) -> Profile:
    """The training data's profile: 20 N(0,1) features, from a sample apart from every stream."""
    rng = np.random.default_rng(seed)
    return build_profile({f"x{i}": rng.normal(size=n) for i in range(F)})


def detector(ref: Profile, arl0: float, mode: Mode = "mean") -> SequentialDetector:
    return calibrate_sequential(ref, arl0=arl0, shift=0.5, mode=mode, reference_version="bench@1")


def throughput(det: SequentialDetector, records: int) -> float:
    block = np.random.default_rng(1).normal(size=(200_000, F))
    state, done, spent = SequentialState(), 0, 0.0
    while done < records:
        for lo in range(0, block.shape[0], BATCH):
            t0 = time.perf_counter()
            state, _ = det.step(state, block[lo : lo + BATCH])
            spent += time.perf_counter() - t0
            done += BATCH
            if done >= records:
                break
    return done / spent


def rss_child(records: int, arl0: float) -> None:
    det = detector(reference(), arl0)
    rng = np.random.default_rng(2)
    state = SequentialState()
    for _ in range(0, records, BATCH):
        state, _ = det.step(state, rng.normal(size=(BATCH, F)))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": state.records, "rss_mb": round(rss_mb, 1)}))


def rss(records: int, arl0: float) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(records), "--arl0", str(arl0)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])


def first_alert_sequential(det: SequentialDetector, state: SequentialState, tail: np.ndarray) -> float:  # type: ignore[type-arg]
    start = state.records
    _, events = det.step(state, tail)
    records = [e.record - start for e in events if isinstance(e, SequentialAlert)]
    return float(records[0]) if records else math.inf


def river_run(make: Callable[[], Any], prefix: np.ndarray, tails: list[np.ndarray]) -> tuple[int, list[float]]:  # type: ignore[type-arg]
    """One river detector per feature over the stationary prefix (alarms counted), then a copy of each into every
    tail: the first alarm on any feature, in records from the shift."""
    dets = [make() for _ in range(prefix.shape[1])]
    alarms = 0
    for f, d in enumerate(dets):
        for v in prefix[:, f].tolist():
            d.update(v)
            alarms += d.drift_detected
    delays = []
    for tail in tails:
        first = math.inf
        for f, d in enumerate(dets):
            d2 = copy.deepcopy(d)
            for i, v in enumerate(tail[:, f].tolist(), start=1):
                if i >= first:
                    break
                d2.update(v)
                if d2.drift_detected:
                    first = i
                    break
        delays.append(float(first))
    return alarms, delays


def windowed_run(ref: Profile, prefix: np.ndarray, tails: list[np.ndarray]) -> tuple[int, list[float]]:  # type: ignore[type-arg]
    det = calibrate(ref, window_size=200, arl0=1000, numeric="ks", seed=8)
    spec = Windows(ref, pane=50.0, panes=4)
    names = [f"x{i}" for i in range(F)]

    def feed(
        win: WindowState, ds: DetectorState, x: np.ndarray, offset: int
    ) -> tuple[WindowState, DetectorState, list[float]]:  # type: ignore[type-arg]
        ends = []
        for lo in range(0, x.shape[0], 50):
            chunk = x[lo : lo + 50]
            at = offset + lo
            win = spec.add(
                win, np.arange(at, at + len(chunk), dtype=float), {n: chunk[:, i] for i, n in enumerate(names)}
            )
            win, closed = spec.advance(win, at + 50.0)
            for w in closed:
                ds, event = det.step(ds, w)
                if isinstance(event, Alert):
                    ends.append(w.end)
        return win, ds, ends

    win, ds, pre = feed(WindowState(), DetectorState(), prefix, 0)
    n = prefix.shape[0]
    delays = []
    for tail in tails:
        _, _, ends = feed(win, ds, tail, n)
        delays.append(float(ends[0] - n) if ends else math.inf)
    return len(pre), delays


def detection(args: argparse.Namespace, ref: Profile) -> dict[str, Any]:
    from river import drift

    dets = {mode: detector(ref, args.arl0, mode) for mode in ("mean", "binned")}
    delays: dict[str, dict[float, list[float]]] = {}
    alarms: dict[str, int] = {}
    counted: dict[str, int] = {}

    def note(name: str, fa: int, records: int, ds: list[float]) -> None:
        alarms[name] = alarms.get(name, 0) + fa
        counted[name] = counted.get(name, 0) + records
        for shift, d in zip(SHIFTS, ds, strict=True):
            delays.setdefault(name, {}).setdefault(shift, []).append(d)

    for seed in range(args.seeds):
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        prefix = rng.normal(size=(args.records, F))
        j = int(rng.integers(F))
        base = rng.normal(size=(args.tail, F))
        tails = []
        for shift in SHIFTS:
            tail = base.copy()
            tail[:, j] += shift
            tails.append(tail)
        for mode, det in dets.items():
            state, events = det.step(SequentialState(), prefix)
            fa = sum(isinstance(e, SequentialAlert) for e in events)
            note(f"kawa_{mode}", fa, args.records, [first_alert_sequential(det, state, t) for t in tails])
        note("river_adwin", *_pair(river_run(drift.ADWIN, prefix, tails), args.records))
        matched = functools.partial(drift.ADWIN, delta=args.adwin_matched_delta)
        note("river_adwin_matched", *_pair(river_run(matched, prefix, tails), args.records))
        note("river_pagehinkley", *_pair(river_run(drift.PageHinkley, prefix, tails), args.records))
        k = args.kswin_prefix
        fa, ds = river_run(lambda s=seed: drift.KSWIN(seed=s), prefix[-k:, [j]], [t[:, [j]] for t in tails])
        note("river_kswin", fa * F, k, ds)  # one feature watched: scale its alarms to 20 features
        if args.windowed:
            w = args.windowed_prefix
            note("kawa_windowed", *_pair(windowed_run(ref, prefix[-w:], tails), w))
        log(
            f"seed {seed}: feature x{j}, "
            + ", ".join(f"{n} {d[0.5][-1]:.0f}/{d[1.0][-1]:.0f}" for n, d in delays.items())
            + f" ({time.perf_counter() - t0:.1f}s)"
        )
    if args.stationary:
        rng = np.random.default_rng(10_000)
        for mode, det in dets.items():
            state, fa = SequentialState(), 0
            for _ in range(0, args.stationary, 100_000):
                state, events = det.step(state, rng.normal(size=(100_000, F)))
                fa += sum(isinstance(e, SequentialAlert) for e in events)
            alarms[f"kawa_{mode}"] += fa
            counted[f"kawa_{mode}"] += state.records
    out: dict[str, Any] = {}
    for name, by_shift in delays.items():
        for shift, ds in by_shift.items():
            tag = "05sigma" if shift == 0.5 else "1sigma"
            out[f"{name}_delay_{tag}"] = float(np.median(ds))
            out[f"{name}_missed_{tag}"] = int(sum(math.isinf(d) for d in ds))
        out[f"{name}_false_alarms_per_1e6"] = round(alarms[name] / counted[name] * 1e6, 3)
        out[f"{name}_false_alarm_records"] = counted[name]
    return out


def _pair(result: tuple[int, list[float]], records: int) -> tuple[int, int, list[float]]:
    return result[0], records, result[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--records", type=int, default=100_000, help="stationary records before the shift")
    parser.add_argument("--tail", type=int, default=3_000, help="records after the shift")
    parser.add_argument("--stationary", type=int, default=10_000_000, help="extra stationary records (Kawa)")
    parser.add_argument("--throughput", type=int, default=2_000_000, help="records timed for records_per_s")
    parser.add_argument("--arl0", type=float, default=2e6, help="declared records between false alarms")
    parser.add_argument(
        "--adwin-matched-delta", type=float, default=1e-4, help="ADWIN's delta for a false-alarm rate like Kawa's"
    )
    parser.add_argument("--kswin-prefix", type=int, default=2_000)
    parser.add_argument("--windowed-prefix", type=int, default=20_000)
    parser.add_argument("--no-windowed", dest="windowed", action="store_false")
    parser.add_argument("--no-rss", dest="rss", action="store_false")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.arl0)
        return
    ref = reference()
    result: dict[str, Any] = {"arl0_records": args.arl0, "seeds": args.seeds, "records": args.records}
    t0 = time.perf_counter()
    det = detector(ref, args.arl0)
    binned = detector(ref, args.arl0, "binned")
    result["calibrate_s"] = round(time.perf_counter() - t0, 3)
    result["threshold_mean"] = round(det.h[0], 3)
    result["records_per_s"] = round(throughput(det, args.throughput))
    result["records_per_s_binned"] = round(throughput(binned, args.throughput))
    log(f"throughput: {result['records_per_s']} records/s (mean), {result['records_per_s_binned']} (binned)")
    result["rss_mb_1m"] = rss(1_000_000, args.arl0) if args.rss else None
    result["rss_mb_10m"] = rss(10_000_000, args.arl0) if args.rss else None
    log(f"rss: {result['rss_mb_1m']} MB at 1M records, {result['rss_mb_10m']} MB at 10M")
    t0 = time.perf_counter()
    found = detection(args, ref)
    result["detection_s"] = round(time.perf_counter() - t0, 1)
    result.update(found)
    result.update(
        delay_05sigma=found["kawa_mean_delay_05sigma"],
        delay_1sigma=found["kawa_mean_delay_1sigma"],
        false_alarms_per_1e6=found["kawa_mean_false_alarms_per_1e6"],
        river_adwin_delay_05sigma=found["river_adwin_delay_05sigma"],
        river_kswin_false_alarms_per_1e6=found["river_kswin_false_alarms_per_1e6"],
        evidently_s=None,
        nannyml_s=None,
        kawa_s=None,
        max_stat_diff=None,
        cbpe_abs_err_auroc=None,
    )
    for key, value in result.items():
        log(f"  {key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
