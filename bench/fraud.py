"""Fraud scoring benchmark: N payments scored from Parquet by the compiled engine, against LightGBM and ONNX Runtime.

    PYTHONPATH=src nice -n 15 .venv/bin/python bench/fraud.py --rows 13000000

Steps (last line JSON):

1. simulate ``--rows`` payments (customers = rows / 355 over 183 days, the handbook's densities; 13M ≈ RBC's
   37k customers), oracle labels with the 7-day delay;
2. ``backfill_wall_s``: the 15 features of every row by DuckDB (:func:`~kawa.apps.fraud.backfill.duckdb_features`);
3. LightGBM (``--trees`` 300, ``--leaves`` 31) and the handbook's depth-2 tree on the protocol's training days
   (115-121), scored on its test days: ``cp100_model``, ``cp100_baseline`` (and AUC, AP);
4. the features written to Parquet (row groups of 262,144 rows), then scored from it by the batch job
   (:func:`~kawa.apps.fraud.batch.score_parquet`, the gated lleaves engine, ``--threads`` 2) **in a child
   process**, so that ``peak_rss_mb`` is the scoring's own peak: ``score_wall_s`` (read + score + write,
   compile excluded, ``compile_s``), ``rows_per_s``;
5. ``lightgbm_rows_per_s``, ``onnx_rows_per_s`` (and ``engine_rows_per_s_in_memory``): plain ``Booster.predict``,
   ONNX Runtime and the compiled engine on the same ``--compare-rows`` rows in memory, same threads;
   ``onnx_max_abs_diff`` is ONNX's largest probability change;
6. streaming at ``--stream-rate`` (2,000) payments/s for ``--stream-seconds``: from the first test day, after the
   streaming feature state was warmed on the ``--warm-days`` (37: every window full) before it, each payment
   goes through the keyed feature state, the engine (one row, one thread) and the decision; latency is from its
   scheduled arrival to its decision: ``stream_p50_ms``, ``stream_p99_ms``; ``stream_vs_batch_max_abs`` is
   the gap between the stream's features and DuckDB's for the same payments.

``--data kaggle`` runs none of that: it loads the real Kaggle/ULB set (:mod:`kawa.apps.fraud.kaggle`), trains
the app's LightGBM (``kaggle.DEFAULT_PARAMS``) and the handbook's depth-2 tree on the first day and scores the
second (``--undersample`` keeps that share of the genuine training payments; ``--threads`` defaults to 1).
Last line JSON: ``rows``, ``frauds``, ``load_s``, ``cp100_model``, ``cp100_baseline``, ``auprc_model`` and the
rest of the metrics.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kawa.apps.fraud import engine, kaggle
from kawa.apps.fraud.backfill import duckdb_features
from kawa.apps.fraud.baseline import Protocol, fit_tree, score, split
from kawa.apps.fraud.batch import score_parquet
from kawa.apps.fraud.decisions import DecisionPolicy, DecisionState, decide
from kawa.apps.fraud.features import FeatureSpec, FeatureState, Outcome, Payment, observe_label, update
from kawa.apps.fraud.labels import LabelEvents, oracle_labels
from kawa.apps.fraud.sim import SimSettings, simulate
from kawa.apps.fraud.train import fit_lightgbm
from kawa.apps.fraud.transactions import SECONDS_PER_DAY, Transactions

ROWS_PER_CUSTOMER = 355  # 183 days x ~1.94 payments a day (13.14M rows for 37,000 customers)
GROUP_ROWS = 262_144


def rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` first: Linux carries ``ru_maxrss`` across ``exec``, so a child
    forked from the 5 GB bench would report the parent's peak (it did: 4.9 GB for a 0.5 GB scorer)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(scorer: engine.Scorer, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    for lo in range(0, len(x), GROUP_ROWS):
        scorer.score(x[lo:lo + GROUP_ROWS])
    return len(x) / (time.perf_counter() - t0)


def write_features(path: Path, tx: Transactions, x: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = FeatureSpec().names
    schema = pa.schema([("tx_id", pa.int64()), ("customer_id", pa.int64()), ("time", pa.int64()),
                        *[(n, pa.float64()) for n in names]])
    with pq.ParquetWriter(str(path), schema) as writer:
        for lo in range(0, len(tx), GROUP_ROWS):
            hi = min(lo + GROUP_ROWS, len(tx))
            cols = {"tx_id": tx.tx_id[lo:hi], "customer_id": tx.customer_id[lo:hi], "time": tx.time[lo:hi],
                    **{n: np.ascontiguousarray(x[lo:hi, j]) for j, n in enumerate(names)}}
            writer.write_table(pa.table(cols, schema=schema), row_group_size=GROUP_ROWS)


def score_child(args: argparse.Namespace) -> None:
    """The child process: build the gated engine, score the Parquet file, report its own peak RSS."""
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    # The check rows from the first row group only (iter_batches would decode far ahead: see batch.py).
    check = pq.ParquetFile(args.input).read_row_group(0, columns=list(FeatureSpec().names))
    x = np.column_stack([check.column(n).to_numpy() for n in FeatureSpec().names])[:20_000]
    del check
    scorer = engine.build(args.model, "auto", check=x, threads=args.threads, workdir=args.workdir)
    compile_s = time.perf_counter() - t0
    result = score_parquet(args.input, args.output, scorer, batch_rows=GROUP_ROWS)
    print(json.dumps({"rows": result.rows, "score_wall_s": result.wall_s, "engine_s": result.score_s,
                      "engine": result.engine, "compile_s": compile_s, "peak_rss_mb": rss_mb(),
                      "parity_max_abs_diff": scorer.parity.max_abs_diff if scorer.parity else None}))


def _events(tx: Transactions, labels: LabelEvents) -> tuple[list[int], int]:
    when = np.concatenate([tx.time, labels.observed_at])
    kind = np.concatenate([np.ones(len(tx), dtype=np.int8), np.zeros(len(labels), dtype=np.int8)])
    return np.lexsort((np.arange(len(when)), kind, when)).tolist(), len(tx)


def stream(tx: Transactions, labels: LabelEvents, feats: np.ndarray, booster: Any, args: argparse.Namespace,
           start_day: int, workdir: Path) -> dict[str, Any]:
    """Warm the keyed state, then replay at a fixed rate: features → compiled engine (1 row) → decision."""
    start = start_day * SECONDS_PER_DAY
    warm_rows = np.flatnonzero((tx.time >= start - args.warm_days * SECONDS_PER_DAY) & (tx.time < start))
    live_rows = np.flatnonzero(tx.time >= start)[: int(args.stream_rate * args.stream_seconds)]
    end = int(tx.time[live_rows[-1]])
    state = FeatureState(spec=FeatureSpec(start_date=tx.start_date))

    def payments(rows: np.ndarray) -> list[Payment]:
        return [Payment(*p) for p in zip(tx.tx_id[rows].tolist(), tx.customer_id[rows].tolist(),
                tx.terminal_id[rows].tolist(), tx.time[rows].tolist(), tx.amount[rows].tolist(), strict=True)]

    def outcomes(mask: np.ndarray) -> list[Outcome]:
        lab = labels.take(mask)
        return [Outcome(*o) for o in zip(lab.tx_id.tolist(), lab.terminal_id.tolist(), lab.tx_time.tolist(),
                lab.observed_at.tolist(), lab.is_fraud.tolist(), strict=True)]

    t0 = time.perf_counter()
    warm_pay = payments(warm_rows)
    warm_lab = outcomes((labels.observed_at >= tx.time[warm_rows[0]]) & (labels.observed_at < start))
    order, n = _events(tx.take(warm_rows), labels.take(
        (labels.observed_at >= tx.time[warm_rows[0]]) & (labels.observed_at < start)))
    for i in order:
        if i < n:
            update(state, warm_pay[i])
        else:
            observe_label(state, warm_lab[i - n])
    warm_s = time.perf_counter() - t0

    one = engine.build(booster, "auto", check=feats[live_rows[:5000]], threads=1, workdir=workdir / "stream")
    live = payments(live_rows)
    live_lab = outcomes((labels.observed_at >= start) & (labels.observed_at <= end))
    lab_at = [o.observed_at for o in live_lab]
    policy, dstate = DecisionPolicy(), DecisionState()
    lat = np.zeros(len(live))
    rows = np.zeros((len(live), feats.shape[1]))
    actions = {"block": 0, "investigate": 0, "pass": 0}
    j = 0
    gc.collect()
    gc.disable()  # a latency loop: no collector pauses inside it (as a serving process would tune its GC)
    service = np.zeros(len(live))
    began = time.perf_counter()
    for i, p in enumerate(live):
        due = began + i / args.stream_rate
        while (now := time.perf_counter()) < due:
            if due - now > 0.002:
                time.sleep(due - now - 0.001)
        started = time.perf_counter()
        while j < len(live_lab) and lab_at[j] <= p.time:
            observe_label(state, live_lab[j])
            j += 1
        f = update(state, p)
        s = float(one.score(np.asarray([f]))[0])
        u = ((p.tx_id * 2654435761) % 2**32) / 2**32
        dstate, d = decide(policy, dstate, card=p.customer_id, day=p.time // SECONDS_PER_DAY, score=s, u=u)
        actions[d.action] += 1
        done = time.perf_counter()
        lat[i] = done - due
        service[i] = done - started
        rows[i] = f
    wall = time.perf_counter() - began
    gc.enable()
    return {"stream_rows": len(live), "stream_rate": args.stream_rate, "stream_wall_s": round(wall, 2),
            "stream_p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
            "stream_p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
            "stream_max_ms": round(float(lat.max()) * 1e3, 3),
            "stream_service_p50_ms": round(float(np.percentile(service, 50)) * 1e3, 3),
            "stream_service_p99_ms": round(float(np.percentile(service, 99)) * 1e3, 3),
            "stream_warm_rows": len(warm_rows),
            "stream_warm_s": round(warm_s, 1), "stream_actions": actions,
            "stream_vs_batch_max_abs": float(np.abs(rows - feats[live_rows]).max())}


def kaggle_bench(args: argparse.Namespace) -> dict[str, Any]:
    data = kaggle.load()
    print(f"loaded {len(data):,} payments, {data.frauds} frauds from {data.path} in {data.load_s:.2f} s", flush=True)
    t0 = time.perf_counter()
    result = kaggle.evaluate(data, undersample=args.undersample, seed=args.seed, threads=args.threads)
    wall = time.perf_counter() - t0
    m, b, a = result.model, result.baseline, result.amount
    print(f"day 0 → day 1: LightGBM CP@100 {m.cp_at_k:.3f} AP {m.ap:.3f}; tree CP@100 {b.cp_at_k:.3f} "
          f"AP {b.ap:.3f}; Amount alone CP@100 {a.cp_at_k:.3f}", flush=True)
    return {"data": "kaggle", "rows": len(data), "frauds": data.frauds, "load_s": round(data.load_s, 2),
            "train_rows": result.train_rows, "train_frauds": result.train_frauds, "test_rows": m.rows,
            "test_frauds": m.frauds, "undersample": args.undersample, "params": result.params,
            "train_score_s": round(wall, 1), "auroc_model": round(m.auc, 4), "auprc_model": round(m.ap, 4),
            "cp100_model": round(m.cp_at_k, 4), "auroc_baseline": round(b.auc, 4),
            "auprc_baseline": round(b.ap, 4), "cp100_baseline": round(b.cp_at_k, 4),
            "cp100_amount": round(a.cp_at_k, 4), "auprc_amount": round(a.ap, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("sim", "kaggle"), default="sim")
    ap.add_argument("--undersample", type=float, default=None, help="kaggle: share of genuine training rows kept")
    ap.add_argument("--rows", type=int, default=13_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="default 2; 1 with --data kaggle")
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--leaves", type=int, default=31)
    ap.add_argument("--compare-rows", type=int, default=1_000_000)
    ap.add_argument("--duckdb-memory", default="3GB")
    ap.add_argument("--stream-rate", type=float, default=2000.0)
    ap.add_argument("--stream-seconds", type=float, default=10.0)
    ap.add_argument("--warm-days", type=int, default=37)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads is None:
        # Kaggle: one thread. Two OpenMP threads spin-wait on a loaded 2-core machine (61.7 s against 7.9 s).
        args.threads = 1 if args.data == "kaggle" else 2
    if args.score_only:
        score_child(args)
        return
    if args.data == "kaggle":
        print(json.dumps(kaggle_bench(args)))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kawa-fraud-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    customers = max(50, round(args.rows / ROWS_PER_CUSTOMER))
    t0 = time.perf_counter()
    tx = simulate(SimSettings(customers=customers, days=183, seed=args.seed)).tx
    labels = oracle_labels(tx, 7)
    sim_s = time.perf_counter() - t0
    print(f"simulated {len(tx):,} payments ({customers:,} customers) in {sim_s:.1f} s", flush=True)

    t0 = time.perf_counter()
    feats = duckdb_features(tx, labels, threads=args.threads, memory_limit=args.duckdb_memory)
    backfill_s = time.perf_counter() - t0
    print(f"DuckDB backfill {backfill_s:.1f} s", flush=True)

    protocol = Protocol(start_day=115)
    train_rows, test_rows = split(tx, protocol)
    t0 = time.perf_counter()
    booster = fit_lightgbm(feats[train_rows], tx.is_fraud[train_rows],
                           {"num_leaves": args.leaves, "num_boost_round": args.trees, "learning_rate": 0.05},
                           seed=args.seed, threads=args.threads)
    train_s = time.perf_counter() - t0
    model = score(tx, test_rows, booster.predict(feats[test_rows], num_threads=args.threads))
    tree = fit_tree(feats[train_rows], tx.is_fraud[train_rows])
    base = score(tx, test_rows, tree.predict_proba(feats[test_rows])[:, 1].astype(np.float64))
    model_file = work / "model.txt"
    booster.save_model(str(model_file))
    print(f"trained on {len(train_rows):,} rows in {train_s:.1f} s: CP@100 {model.cp_at_k:.3f} "
          f"(tree {base.cp_at_k:.3f})", flush=True)

    t0 = time.perf_counter()
    write_features(work / "features.parquet", tx, feats)
    write_s = time.perf_counter() - t0
    child = subprocess.run(
        [sys.executable, __file__, "--score-only", "--model", str(model_file), "--input",
         str(work / "features.parquet"), "--output", str(work / "scores.parquet"), "--threads",
         str(args.threads), "--workdir", str(work / "engine")],
        check=True, capture_output=True, text=True, env={**os.environ},
    )
    scored = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"scored {scored['rows']:,} rows from Parquet in {scored['score_wall_s']:.1f} s "
          f"({scored['engine']}), peak RSS {scored['peak_rss_mb']:.0f} MB", flush=True)

    x = np.ascontiguousarray(feats[: args.compare_rows])
    compiled = engine.build(booster, "auto", check=x[:20_000], threads=args.threads, workdir=work / "engine")
    onnx = engine.build(booster, "onnx", check=x[:20_000], threads=args.threads)
    plain = engine.build(booster, "lightgbm", threads=args.threads)
    rates = {name: throughput(s, x) for name, s in (("engine", compiled), ("lightgbm", plain), ("onnx", onnx))}
    onnx_gap = float(np.abs(onnx.score(x) - plain.score(x)).max())
    print(f"in memory, rows/s: {', '.join(f'{k} {v:,.0f}' for k, v in rates.items())}", flush=True)

    streamed = stream(tx, labels, feats, booster, args, protocol.test_start, work)
    rows_per_s = scored["rows"] / scored["score_wall_s"]
    result = {
        "rows": scored["rows"], "customers": customers, "threads": args.threads, "trees": args.trees,
        "leaves": args.leaves, "engine": scored["engine"],
        "score_wall_s": round(scored["score_wall_s"], 2), "rows_per_s": round(rows_per_s),
        "engine_only_s": round(scored["engine_s"], 2), "compile_s": round(scored["compile_s"], 2),
        "parity_max_abs_diff": scored["parity_max_abs_diff"],
        "lightgbm_rows_per_s": round(rates["lightgbm"]), "onnx_rows_per_s": round(rates["onnx"]),
        "engine_rows_per_s_in_memory": round(rates["engine"]), "compare_rows": len(x),
        "speedup_vs_lightgbm": round(rows_per_s / rates["lightgbm"], 2), "onnx_max_abs_diff": onnx_gap,
        "peak_rss_mb": round(scored["peak_rss_mb"]), "bench_peak_rss_mb": round(rss_mb()),
        "sim_wall_s": round(sim_s, 1), "backfill_wall_s": round(backfill_s, 1),
        "parquet_write_s": round(write_s, 1), "train_wall_s": round(train_s, 1), "train_rows": len(train_rows),
        **{k: v for k, v in streamed.items()},
        "auc_model": round(model.auc, 4), "ap_model": round(model.ap, 4), "cp100_model": round(model.cp_at_k, 4),
        "auc_baseline": round(base.auc, 4), "ap_baseline": round(base.ap, 4),
        "cp100_baseline": round(base.cp_at_k, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
