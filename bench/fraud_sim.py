"""Fraud core benchmark: simulate, backfill the features (DuckDB on all rows, numpy too), stream a prefix,
score the handbook's decision-tree baseline, and show what the mid-run pattern does to it.

    PYTHONPATH=src nice -n 15 .venv/bin/python bench/fraud_sim.py --customers 5000 --days 183

Steps and what they print (last line JSON):

- ``sim_wall_s``: :func:`kawa.apps.fraud.sim.simulate` (``rows``, ``fraud_rate``, ``scenario_rows``);
- ``backfill_wall_s``: :func:`~kawa.apps.fraud.backfill.duckdb_features` on every row with the handbook's oracle
  labels (7-day delay); ``numpy_backfill_wall_s`` the numpy version, ``numpy_vs_duckdb_max_abs`` their gap;
- ``stream_rows_per_s``: :func:`~kawa.apps.fraud.features.stream_features` on the first ``--stream-rows``
  payments, one thread; ``stream_vs_duckdb_max_abs`` the gap to the SQL rows;
- ``auc_baseline``, ``ap_baseline``, ``cp100_baseline``: the depth-2 tree, train 7 → skip 7 → test 7 from
  ``--start-day`` (the book: 0.764, 0.496, 0.24);
- the drift (when the run covers ``drift_day ± 21`` days), with a tree of depth ``--drift-depth`` (5; depth 2
  cannot express the new pattern): CP@100 and AP on the test week of a protocol that starts at the drift day,
  for the tree trained before the drift (``*_stale_after_drift``) and for one retrained on the first week
  after it (``*_retrained_after_drift``); ``*_before_drift`` is the stale tree on the week just before it.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from kawa.apps.fraud.backfill import duckdb_features, numpy_features
from kawa.apps.fraud.baseline import Protocol, fit_tree, run_baseline, score, split
from kawa.apps.fraud.features import stream_features
from kawa.apps.fraud.labels import oracle_labels
from kawa.apps.fraud.sim import SimSettings, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--days", type=int, default=183)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--drift-day", type=int, default=140, help="scenario 4 start; -1: none")
    ap.add_argument("--stream-rows", type=int, default=200_000)
    ap.add_argument("--start-day", type=int, default=None, help="protocol start (default: 115, or days - 21)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duckdb-memory", default=None, help="DuckDB memory_limit, e.g. 2GB (it spills beyond)")
    ap.add_argument("--drift-depth", type=int, default=5, help="tree depth for the drift comparison")
    args = ap.parse_args()
    if args.days < 21:
        raise SystemExit("--days must be at least 21 (train 7, skip 7, test 7)")

    settings = SimSettings(customers=args.customers, days=args.days, seed=args.seed,
                           drift_day=None if args.drift_day < 0 else args.drift_day)
    t0 = time.perf_counter()
    sim = simulate(settings)
    sim_wall = time.perf_counter() - t0
    tx = sim.tx
    labels = oracle_labels(tx, 7)
    print(f"simulated {len(tx):,} payments in {sim_wall:.1f} s, fraud {tx.is_fraud.mean():.4%}", flush=True)

    t0 = time.perf_counter()
    feats = duckdb_features(tx, labels, threads=args.threads, memory_limit=args.duckdb_memory)
    backfill_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats_np = numpy_features(tx, labels)
    numpy_wall = time.perf_counter() - t0
    print(f"backfill: duckdb {backfill_wall:.1f} s, numpy {numpy_wall:.1f} s", flush=True)

    m = min(args.stream_rows, len(tx))
    prefix = tx.take(np.arange(m))
    seen = labels.take(labels.observed_at <= (prefix.time[-1] if m else -1))
    t0 = time.perf_counter()
    feats_stream = stream_features(prefix, seen)
    stream_wall = time.perf_counter() - t0
    print(f"stream: {m:,} payments in {stream_wall:.1f} s", flush=True)

    start = args.start_day if args.start_day is not None else min(115, args.days - 21)
    base = run_baseline(tx, feats, Protocol(start_day=start))
    result: dict[str, object] = {
        "customers": args.customers, "days": args.days, "rows": len(tx),
        "fraud_rate": round(float(tx.is_fraud.mean()), 6),
        "scenario_rows": {str(s): int(n) for s, n in enumerate(np.bincount(tx.scenario, minlength=5))},
        "sim_wall_s": round(sim_wall, 2), "backfill_wall_s": round(backfill_wall, 2),
        "numpy_backfill_wall_s": round(numpy_wall, 2),
        "numpy_vs_duckdb_max_abs": float(np.abs(feats_np - feats).max()),
        "stream_rows": m, "stream_rows_per_s": round(m / stream_wall) if stream_wall > 0 else None,
        "stream_vs_duckdb_max_abs": float(np.abs(feats_stream - feats[:m]).max()) if m else 0.0,
        "baseline_start_day": start, "baseline_train_rows": base.train_rows, "baseline_test_rows": base.test.rows,
        "auc_baseline": round(base.test.auc, 4), "ap_baseline": round(base.test.ap, 4),
        "cp100_baseline": round(base.test.cp_at_k, 4),
    }
    drift = settings.drift_day
    if drift is not None and drift + 21 <= args.days and drift - 21 >= 0:
        stale_train, _ = split(tx, Protocol(start_day=drift - 21))
        stale = fit_tree(feats[stale_train], tx.is_fraud[stale_train], max_depth=args.drift_depth)
        _, before = split(tx, Protocol(start_day=drift - 21))
        fresh_train, after = split(tx, Protocol(start_day=drift))
        fresh = fit_tree(feats[fresh_train], tx.is_fraud[fresh_train], max_depth=args.drift_depth)
        runs = {
            "before_drift": score(tx, before, stale.predict_proba(feats[before])[:, 1]),
            "stale_after_drift": score(tx, after, stale.predict_proba(feats[after])[:, 1]),
            "retrained_after_drift": score(tx, after, fresh.predict_proba(feats[after])[:, 1]),
        }
        result["drift_depth"] = args.drift_depth
        for name, s in runs.items():
            result[f"cp100_{name}"] = round(s.cp_at_k, 4)
            result[f"ap_{name}"] = round(s.ap, 4)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
