"""Monitoring benchmark (issue 13): the sequential drift detector's throughput, memory and detection, side by side
with river's ADWIN, KSWIN and PageHinkley and with Kawa's windowed detector, on the same seeded streams.

    PYTHONPATH=src .venv/bin/python bench/monitor.py [--seeds 20] [--records 100000] [--tail 3000]
        [--stationary 10000000] [--throughput 1000000] [--arl0 2e6] [--no-rss] [--no-windowed] [--peers]

- **Throughput**: records/s of ``SequentialDetector.step`` with 20 numeric N(0,1) features in batches of 10,000
  records, one thread, best of three runs (the data is generated beforehand and not timed);
  ``records_per_s_with_sketches`` also adds each batch to a window sketch of the reference profile (the windowed
  statistics' input); ``records_per_s_persistent_1sigma`` streams a persistent 1 sd shift in one feature (a
  crossing every few dozen records). RSS at 1M and at 10M
  records: a fresh subprocess each streams that many records through the detector, generating them batch by
  batch, and reports its peak RSS.
- **Detection**, per seed: 20 N(0,1) features; ``--records`` stationary records, then ``--tail`` records where one
  feature (drawn per seed) is shifted by 0.5 or 1 standard deviation. The detectors see the stationary records
  once and continue from their state into each tail. Delay = records from the shift to the first alert on *any*
  feature (the same protocol for every detector; river's detectors run one per feature). False alarms = alerts
  before the shift, per 10^6 records (of 20 features), plus ``--stationary`` more stationary records for Kawa.
  KSWIN costs about 160 us per update, so it runs on the shifted feature only: on the last ``--kswin-prefix``
  stationary records and the tail; its false-alarm rate per 10^6 records of 20 features is scaled from those.
- **ADWIN at a matched false-alarm rate**: river's default ``delta = 0.002`` raises about 13 false alarms per 10^6
  records here; ``--adwin-matched-delta`` (default 1e-4) runs ADWIN a second time at a rate like Kawa's budget.
  Conversely ``kawa_mean_at_adwin_rate`` is Kawa's detector declared at ADWIN's rate (``--adwin-rate-arl0``), and
  ``kawa_mean_at_goal`` declared at exactly the goal's budget, 1 per 10^6 (``--goal-arl0``).
- **Oracle CUSUM** (``bench/monitor_oracle.py``; ``--no-oracle`` skips it): the detector that knows the shifted
  feature, the direction and the size, tuned exactly to 1 false alarm per 10^6 records - optimal in Lorden's
  sense, so no detector has a smaller worst-case delay at that rate. Its median delay on the same tails
  (``oracle_cusum_delay_05sigma``), on ``--oracle-runs`` simulated changes, its worst-case delay, its false alarms
  on ``--oracle-stationary`` records, the same at ADWIN's measured rate, Lorden's asymptotic bound
  ``ln(ARL) / I`` (``I = 0.125`` nats per record at 0.5 sd), and the same CUSUMs on all 20 features (one- and
  two-sided) tuned to the same total rate.
- **Windowed detector** (Kawa's ``DriftDetector``, KS on sliding windows of 200 records sliding by 50, ARL0 = 1000
  windows, effect gate 0.1): on the last ``--windowed-prefix`` stationary records and the tails.
- **Peers** (``--peers``): Evidently 0.7's data-drift preset (PSI, normed Wasserstein) and NannyML 0.13's univariate
  drift (KS, Wasserstein) in their own virtualenv (``~/.cache/kawa/evidently-venv``, created on first use, pinned),
  on ``--peer-windows`` windows of ``--peer-window-size`` records against a reference of 20,000 (NannyML with
  ``calculation_method="exact"``: above 10,000 reference rows it otherwise estimates both on 10,000 bins). Kawa's
  time is its reference profile in exact mode (it keeps the raw values), its sketches of the windows (each with its
  reservoir) and ``drift_row``, the monitor's own function for a window's drift table. ``max_stat_diff`` is the
  largest difference of the same statistic: Kawa's KS against NannyML's, its normed Wasserstein against
  Evidently's (and, un-normed, NannyML's), and Kawa's PSI formula on Evidently's bins where no bin proportion is
  below 1e-4. Below it the PSI rules differ by design (Kawa floors every proportion at 1e-4, Evidently only empty
  bins, at 1e-4 or a millionth of the smallest): ``psi_same_bins_all_pairs`` reports it apart.
  ``ks_binned_sketch_vs_nannyml`` is what the 10-bin sketches alone would give. Without ``--peers`` their keys
  are null.

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
import tempfile
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


def throughput(det: SequentialDetector, records: int, sketches: Profile | None = None, shift: float = 0.0) -> float:
    """Records/s through ``det.step`` (and, given a reference profile, also into a window sketch of it: what the
    monitor does with each decision record), with ``shift`` sd added to the first feature throughout (a persistent
    drift: a crossing every few dozen records at 1 sd); the best of three runs, since the machine is shared."""
    return max(_throughput(det, records, sketches, shift) for _ in range(3))


def _throughput(det: SequentialDetector, records: int, sketches: Profile | None, shift: float) -> float:
    block = np.random.default_rng(1).normal(size=(200_000, F))
    block[:, 0] += shift
    state, done, spent = SequentialState(), 0, 0.0
    window = sketches.empty() if sketches is not None else None
    while done < records:
        for lo in range(0, block.shape[0], BATCH):
            batch = block[lo : lo + BATCH]
            t0 = time.perf_counter()
            state, _ = det.step(state, batch)
            if window is not None:
                window = window.add({f"x{i}": batch[:, i] for i in range(F)})
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

    dets = {"mean": detector(ref, args.arl0, "mean"), "binned": detector(ref, args.arl0, "binned")}
    # the same CUSUMs declared at the false-alarm rate river's default ADWIN shows here (about 13 per 10^6 records)
    dets["mean_at_adwin_rate"] = detector(ref, args.adwin_rate_arl0)
    # and declared at exactly the goal's budget (1 per 10^6 records) instead of --arl0's margin
    dets["mean_at_goal"] = detector(ref, args.goal_arl0)
    delays: dict[str, dict[float, list[float]]] = {}
    alarms: dict[str, int] = {}
    counted: dict[str, int] = {}
    shifted: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])  # type: ignore[type-arg]  # the oracle's view

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
        shifted[0].append(prefix[:, j])
        shifted[1].append(tails[0][:, j])
        for name, det in dets.items():
            state, events = det.step(SequentialState(), prefix)
            fa = sum(isinstance(e, SequentialAlert) for e in events)
            note(f"kawa_{name}", fa, args.records, [first_alert_sequential(det, state, t) for t in tails])
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
        for name, det in dets.items():
            state, fa = SequentialState(), 0
            for _ in range(0, args.stationary, 100_000):
                state, events = det.step(state, rng.normal(size=(100_000, F)))
                fa += sum(isinstance(e, SequentialAlert) for e in events)
            alarms[f"kawa_{name}"] += fa
            counted[f"kawa_{name}"] += state.records
    out: dict[str, Any] = {}
    for name, by_shift in delays.items():
        for shift, ds in by_shift.items():
            tag = "05sigma" if shift == 0.5 else "1sigma"
            out[f"{name}_delay_{tag}"] = float(np.median(ds))
            out[f"{name}_missed_{tag}"] = int(sum(math.isinf(d) for d in ds))
        out[f"{name}_false_alarms_per_1e6"] = round(alarms[name] / counted[name] * 1e6, 3)
        out[f"{name}_false_alarm_records"] = counted[name]
    if args.oracle:
        from monitor_oracle import oracle  # bench/ (the script directory); here: the RSS child never loads it

        t0 = time.perf_counter()
        rate = out["river_adwin_false_alarms_per_1e6"]
        out.update(oracle(*shifted, rate, runs=args.oracle_runs, stationary=args.oracle_stationary))
        log(f"oracle CUSUM ({time.perf_counter() - t0:.1f}s)")
    return out


PEER_VENV = Path.home() / ".cache" / "kawa" / "evidently-venv"
PEER_PINS = ("evidently==0.7.23", "nannyml==0.13.1", "pandas<3")  # Evidently 0.7 fails to import under pandas 3
PEER_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np, pandas as pd
warnings.filterwarnings("ignore")
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
import nannyml as nml

data = np.load(sys.argv[1])
ref, windows = data["ref"], data["windows"]
cols = [f"x{i}" for i in range(ref.shape[1])]
dd = DataDefinition(numerical_columns=cols)
ref_ds = Dataset.from_pandas(pd.DataFrame(ref, columns=cols), data_definition=dd)
out = {"evidently": {}, "nannyml": {}}
t0 = time.perf_counter()
for method in ("psi", "wasserstein"):
    values = []
    for w in windows:
        cur = Dataset.from_pandas(pd.DataFrame(w, columns=cols), data_definition=dd)
        snap = Report([DataDriftPreset(method=method)]).run(cur, ref_ds).dict()
        by_col = {m["config"]["column"]: m["value"] for m in snap["metrics"] if "column" in m["config"]}
        values.append([float(by_col[c]) for c in cols])
    out["evidently"][method] = values
out["evidently_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
# Above 10,000 reference rows NannyML estimates KS and Wasserstein on 10,000 bins by default; "exact" computes them
# on the raw values. (NannyML 0.13 reads calculation_method from the top level of computation_params, and only
# when the method's key is there too.)
exact = {"calculation_method": "exact", "kolmogorov_smirnov": {}, "wasserstein": {}}
calc = nml.UnivariateDriftCalculator(
    column_names=cols, continuous_methods=["kolmogorov_smirnov", "wasserstein", "jensen_shannon"],
    chunk_size=windows.shape[1], computation_params=exact,
)
calc.fit(pd.DataFrame(ref, columns=cols))
res = calc.calculate(pd.DataFrame(windows.reshape(-1, ref.shape[1]), columns=cols)).filter(period="analysis").to_df()
out["nannyml_s"] = time.perf_counter() - t0
for method in ("kolmogorov_smirnov", "wasserstein"):
    out["nannyml"][method] = np.column_stack([res[(c, method, "value")].to_numpy() for c in cols]).tolist()
print(json.dumps(out))
"""


def peer_python() -> Path:
    """The peers' own virtualenv (created on first use, pinned): Evidently and NannyML stay out of Kawa's."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {PEER_VENV} with {', '.join(PEER_PINS)} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return python


def peers(windows_n: int, window_size: int) -> dict[str, Any]:
    """Evidently's data-drift preset (PSI, normed Wasserstein) and NannyML's univariate drift (KS, Wasserstein) on
    the same windows as Kawa's statistics; their time and Kawa's, and the largest differences of the values.

    Kawa's values come through the monitor's own path: a reference profile that keeps its raw values (the exact
    mode), each window's sketch (with its reservoir of raw values, cap = the window size) and ``drift_row``, the
    function that makes a window's drift table."""
    from kawa.monitor import drift
    from kawa.monitor.status import drift_row

    rng = np.random.default_rng(77)
    ref = rng.normal(size=(20_000, F))
    windows = rng.normal(size=(windows_n, window_size, F))
    windows[windows_n // 2 :, :, :3] += 0.25  # half the windows drift in three features
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "windows.npz"
        np.savez(path, ref=ref, windows=windows)
        done = subprocess.run(
            [str(peer_python()), "-c", PEER_SCRIPT, str(path)], check=True, capture_output=True, text=True
        )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    names = [f"x{i}" for i in range(F)]
    t0 = time.perf_counter()
    profile = build_profile({n: ref[:, i] for i, n in enumerate(names)}, samples=True)
    ks = np.empty((windows_n, F))
    wd = np.empty((windows_n, F))
    for w in range(windows_n):
        live = profile.empty(window_size).add({n: windows[w, :, i] for i, n in enumerate(names)})
        for i, n in enumerate(names):
            row = drift_row(profile.features[n], live.features[n])
            assert row["exact"]
            ks[w, i], wd[w, i] = row["ks"], row["normed_wasserstein"]
    kawa_s = time.perf_counter() - t0
    binned = build_profile({n: ref[:, i] for i, n in enumerate(names)})  # the sketches alone, for comparison
    ks_binned = np.empty((windows_n, F))
    for w in range(windows_n):
        live = binned.empty().add({n: windows[w, :, i] for i, n in enumerate(names)})
        for i, n in enumerate(names):
            ks_binned[w, i] = drift.ks_statistic(binned.features[n].counts, live.features[n].counts)
    psi = np.empty((windows_n, F))
    plain = np.zeros((windows_n, F), dtype=bool)  # no bin below the floors, where the two PSI rules differ
    for w in range(windows_n):  # Kawa's PSI formula on Evidently's bins (Sturges over reference and window)
        for i in range(F):
            edges = np.histogram_bin_edges(np.concatenate([ref[:, i], windows[w, :, i]]), bins="sturges")
            r_counts = np.histogram(ref[:, i], edges)[0]
            q_counts = np.histogram(windows[w, :, i], edges)[0]
            psi[w, i] = drift.psi(r_counts, q_counts)
            plain[w, i] = min(r_counts.min() / r_counts.sum(), q_counts.min() / q_counts.sum()) >= drift.PSI_FLOOR
    psi_gap = np.abs(psi - np.asarray(theirs["evidently"]["psi"]))
    norms = np.maximum(np.std(ref, axis=0), 0.001)  # NannyML's Wasserstein is not normed: undo Evidently's norm
    diffs = {  # the same statistic by the same definition: max_stat_diff is the largest of these
        "psi_same_bins_no_bin_below_1e-4": float(np.max(psi_gap[plain], initial=0.0)),
        "wasserstein_vs_evidently": float(np.max(np.abs(wd - np.asarray(theirs["evidently"]["wasserstein"])))),
        "ks_vs_nannyml": float(np.max(np.abs(ks - np.asarray(theirs["nannyml"]["kolmogorov_smirnov"])))),
        "wasserstein_vs_nannyml": float(np.max(np.abs(wd * norms - np.asarray(theirs["nannyml"]["wasserstein"])))),
    }
    binned_gap = float(np.max(np.abs(ks_binned - np.asarray(theirs["nannyml"]["kolmogorov_smirnov"]))))
    return {
        "evidently_s": round(theirs["evidently_s"], 3),
        "nannyml_s": round(theirs["nannyml_s"], 3),
        "kawa_s": round(kawa_s, 4),
        "max_stat_diff": max(diffs.values()),
        "stat_diffs": diffs,
        # PSI where a bin holds less than 1e-4: Kawa floors every proportion there, Evidently only empty bins
        "psi_same_bins_all_pairs": float(np.max(psi_gap)),
        "psi_pairs_with_no_bin_below_1e-4": int(plain.sum()),
        "ks_binned_sketch_vs_nannyml": binned_gap,  # what the sketches alone (10 bins) would give
        "peer_windows": windows_n,
        "peer_window_size": window_size,
    }


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
    parser.add_argument("--adwin-rate-arl0", type=float, default=75_000, help="ARL0 at ADWIN's false-alarm rate")
    parser.add_argument("--goal-arl0", type=float, default=1e6, help="ARL0 at the goal's false-alarm budget")
    parser.add_argument("--kswin-prefix", type=int, default=2_000)
    parser.add_argument("--windowed-prefix", type=int, default=20_000)
    parser.add_argument("--no-windowed", dest="windowed", action="store_false")
    parser.add_argument("--no-rss", dest="rss", action="store_false")
    parser.add_argument("--peers", action="store_true", help="Evidently and NannyML in their own virtualenv")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false")
    parser.add_argument("--oracle-runs", type=int, default=4000, help="simulated changes for the oracle's delays")
    parser.add_argument("--oracle-stationary", type=int, default=20_000_000, help="records for its false alarms")
    parser.add_argument("--peer-windows", type=int, default=10)
    parser.add_argument("--peer-window-size", type=int, default=5_000)
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
    result["records_per_s_with_sketches"] = round(throughput(det, args.throughput, ref))
    result["records_per_s_persistent_1sigma"] = round(throughput(det, args.throughput // 4, shift=1.0))
    log(
        f"throughput: {result['records_per_s']} records/s (mean), {result['records_per_s_binned']} (binned), "
        f"{result['records_per_s_with_sketches']} (mean, and sketched into a window), "
        f"{result['records_per_s_persistent_1sigma']} (mean, under a persistent 1 sd shift)"
    )
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
        cbpe_abs_err_auroc=None,  # the label-free estimate is another module's
    )
    if args.peers:
        result.update(peers(args.peer_windows, args.peer_window_size))
    for key, value in result.items():
        log(f"  {key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
