"""Benchmark of the delayed-outcome join, matured-cohort performance and the label-free estimate.

    .venv/bin/python bench/monitor_outcomes.py [--records N] [--seed S]

1. N decision records (default 100,000; 5,000 entities; scores from a logistic model) and their outcomes: 60 %
   of decisions get one, with an exponential delay (some after maturity: late), 2 % of them delivered twice.
   The join runs in steps of 1,000 decisions with an honest watermark, by EventRef and by entity + window.
   Rate = (decisions + outcomes) / wall time of the join alone (records are built beforehand; the cyclic GC
   is off while timing, as timeit does).
2. The wire form of 20,000 decision records: writing (CloudEvent + Kafka binary form) and reading a log record
   back as the joiner does (header type + one-pass JSON validation).
3. Matured-cohort performance (AUROC with DeLong, AUPRC, precision@k, Wilson intervals, Brier, ECE) of all
   matured decisions in 10 prediction-time buckets x 2 versions.
4. The label-free AUROC estimate under covariate shift without concept shift (reference fit, live inputs
   shifted and narrowed, 20,000 live records, 5 seeds): mean absolute error against the realised AUROC.
5. DeLong interval coverage: 400 seeded binormal cohorts of 80 positives and 120 negatives.

The last line is JSON: records, join_records_per_s (wall), join_records_per_cpu_s (per CPU second of the process:
the per-core rate on a shared machine), join_entity_records_per_s, encode_records_per_s,
decode_records_per_s,
performance_s, cbpe_abs_err_auroc, cbpe_max_abs_err_auroc, auroc_ci_coverage.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scipy import stats

from kawa.events.cloudevents import to_kafka
from kawa.events.ref import EventRef
from kawa.log.base import Record
from kawa.monitor.cbpe import check, estimate
from kawa.monitor.join import JoinConfig, JoinState, Matured, replay
from kawa.monitor.performance import cohorts, delong
from kawa.monitor.records import DecisionRecord, OutcomeEvent, decode

HOUR = 3600.0


def make_stream(n: int, seed: int, by: str) -> tuple[list[DecisionRecord], list[OutcomeEvent]]:
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, n * 10.0, n))  # a decision every 10 s on average
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(1.5 * x - 1.0)))
    y = rng.random(n) < p
    entity = rng.integers(0, 5000, n)
    decisions = [
        DecisionRecord(
            EventRef("bench", str(i)),
            "m",
            1 + i % 2,
            f"e{entity[i]}",
            float(times[i]),
            score=float(p[i]),
            features={"x": float(x[i])},
        )
        for i in range(n)
    ]
    outcomes = []
    delay = rng.exponential(2 * HOUR, n)
    gets = rng.random(n) < 0.6
    twice = rng.random(n) < 0.02
    for i in np.flatnonzero(gets):
        seen = float(times[i] + delay[i])
        if by == "ref":
            o = OutcomeEvent(seen, ref=decisions[i].ref, label=int(y[i]))
        else:
            o = OutcomeEvent(seen, entity=decisions[i].entity, at=float(times[i] + delay[i] / 2), label=int(y[i]))
        outcomes.append(o)
        if twice[i]:
            outcomes.append(o)
    outcomes.sort(key=lambda o: o.observed_at)
    return decisions, outcomes


def bench_join(n: int, seed: int, by: str) -> tuple[float, float, list[Matured], dict[str, int]]:
    """Records (decisions + outcomes) per second of wall time and per CPU second of this process."""
    decisions, outcomes = make_stream(n, seed, by)
    config = JoinConfig(horizon=6 * HOUR, by=by, grace=2 * HOUR)  # type: ignore[arg-type]
    plan = []
    j = 0
    for i in range(0, n, 1000):
        batch = decisions[i : i + 1000]
        w = batch[-1].decided_at
        start = j
        while j < len(outcomes) and outcomes[j].observed_at <= w:
            j += 1
        plan.append((batch, outcomes[start:j], w))
    plan.append(([], outcomes[j:], math.inf))
    state = JoinState(config)
    gc.collect()
    gc.disable()  # as timeit does: the prebuilt records and the kept results are not the join's garbage
    t0, c0 = time.perf_counter(), time.process_time()
    results = replay(state, plan)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.enable()
    matured = [m for r in results for m in r.matured]
    counts = state.counts()
    total = n + len(outcomes)
    return total / elapsed, total / cpu, matured, {k: v for k, v in vars(counts).items() if v}


def bench_codec(decisions: list[DecisionRecord]) -> tuple[float, float]:
    """Records/s of writing (CloudEvent + Kafka binary form) and of reading a log record back (as the joiner does)."""
    t0 = time.perf_counter()
    encoded = [to_kafka(d.to_event("bench")) for d in decisions]
    encode = len(decisions) / (time.perf_counter() - t0)
    records = [Record("decisions", 0, i, k, v, tuple(h)) for i, (k, v, h) in enumerate(encoded)]
    t0 = time.perf_counter()
    for record in records:
        decode(record)
    return encode, len(records) / (time.perf_counter() - t0)


def cbpe_errors(seeds: int = 5, n: int = 20_000) -> list[float]:
    from sklearn.linear_model import LogisticRegression

    coef = np.array([1.2, -0.8, 0.5])
    errors = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        xr = rng.normal(size=(n, 3))
        yr = rng.random(n) < 1 / (1 + np.exp(-(xr @ coef - 1)))
        model = LogisticRegression().fit(xr, yr)
        xl = rng.normal(0.8, 0.6, size=(n, 3))
        yl = (rng.random(n) < 1 / (1 + np.exp(-(xl @ coef - 1)))).astype(int)
        p = model.predict_proba(xl)[:, 1]
        errors.append(abs(check(estimate(p), yl, p).gap))
    return errors


def delong_coverage(draws: int = 400) -> float:
    truth = stats.norm.cdf(1 / math.sqrt(2))
    rng = np.random.default_rng(2026)
    y = np.r_[np.ones(80, int), np.zeros(120, int)]
    hits = sum(delong(y, np.r_[rng.normal(1, 1, 80), rng.normal(0, 1, 120)]).covers(truth) for _ in range(draws))
    return hits / draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.records} decision records", flush=True)

    rate, rate_cpu, matured, counts = bench_join(args.records, args.seed, "ref")
    print(f"join by EventRef: {rate:,.0f} records/s ({rate_cpu:,.0f} per CPU second); {counts}", flush=True)
    rate_entity, entity_cpu, _, counts_entity = bench_join(args.records, args.seed, "entity")
    print(f"join by entity + window: {rate_entity:,.0f} records/s ({entity_cpu:,.0f} per CPU second); {counts_entity}")

    encode, read = bench_codec(make_stream(min(args.records, 20_000), args.seed, "ref")[0])
    print(f"decision records: write {encode:,.0f} records/s (CloudEvent), read {read:,.0f} records/s", flush=True)

    t0 = time.perf_counter()
    span = args.records * 10.0
    table = cohorts(matured, bucket=span / 10, threshold=0.5, k=100)
    perf_s = time.perf_counter() - t0
    print(f"performance of {len(matured):,} matured decisions in {len(table)} cohorts: {perf_s:.3f} s", flush=True)
    first = table[0].metrics
    auroc, auprc = first.auroc, first.auprc
    print(
        f"  first cohort: n={first.n} AUROC {auroc.estimate:.3f} [{auroc.low:.3f}, {auroc.high:.3f}]"
        f" AUPRC {auprc.estimate:.3f} [{auprc.low:.3f}, {auprc.high:.3f}]"
        f" Brier {first.brier.estimate:.3f} ECE {first.ece:.3f}",
        flush=True,
    )

    errors = cbpe_errors()
    print(f"label-free AUROC estimate, covariate shift: abs errors {[round(e, 4) for e in errors]}", flush=True)
    coverage = delong_coverage()
    print(f"DeLong 95 % interval coverage: {coverage:.3f}", flush=True)
    print(
        json.dumps(
            {
                "records": args.records,
                "join_records_per_s": round(rate),
                "join_records_per_cpu_s": round(rate_cpu),
                "join_entity_records_per_s": round(rate_entity),
                "encode_records_per_s": round(encode),
                "decode_records_per_s": round(read),
                "performance_s": round(perf_s, 4),
                "cbpe_abs_err_auroc": round(float(np.mean(errors)), 4),
                "cbpe_max_abs_err_auroc": round(float(np.max(errors)), 4),
                "auroc_ci_coverage": coverage,
            }
        )
    )


if __name__ == "__main__":
    main()
