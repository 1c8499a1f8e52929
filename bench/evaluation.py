"""Evaluation benchmark (issue 14): error rates, coverage and time-to-decision of Kawa's always-valid tests under
continuous peeking, doubly robust off-policy coverage, and the cost of assignment in the request path.

    PYTHONPATH=src .venv/bin/python bench/evaluation.py [--runs 2000] [--seed 14] [--no-progress]

Every number is a seeded simulation (alpha = 0.05, normal outcomes with sigma = 1 unless said):

- ``aa_fpr_sequential``: ``--runs`` A/A experiments; a look after every matured batch of 25 units per arm, 40
  looks, the mixture mSPRT / asymptotic confidence sequence of ``kawa.evaluation.sequential`` with ρ² planned for
  n* = 2,000 units; a run is a false positive when *any* look rejects (its e-value reaches 1/alpha).
- ``aa_fpr_naive``: the same runs, a fixed-n two-sided z-test repeated at every look (p ≤ alpha at any look).
- ``cs_coverage``: ``--runs // 2`` runs with a true difference of 0.3, same looks: the share of runs whose
  interval holds the true difference at *every* look.
- ``dr_coverage``: ``max(50, --runs // 5)`` logs of 2,000 units, logging policy 70/30, candidate π₁ = sigmoid(x₁)
  (the setting of ``tests/evaluation/test_ope.py``), cross-fitted doubly robust 95 % interval holding the true
  value (computed by quadrature).
- ``median_units_to_decision``: ``--runs // 2`` runs with δ = 0.15, looks every 25 units per arm up to 3x the
  fixed horizon, ρ² planned for the fixed horizon; the median of total units at the first rejecting look
  (∞ for an undecided run). ``fixed_horizon_units``: both arms of a fixed-horizon z-test of the same power
  (80 %), ``n = 2 · 2(z_{1-alpha/2} + z_{1-β})² sigma² / δ²`` with the normal quantiles of the standard library
  (``statistics.NormalDist``; no scipy/statsmodels). The simulated power of that fixed test is reported too.
- ``assign_us_p99``: ``Assigner.assign`` per call (one sha256 and a bisect), 20,000 distinct units timed one by
  one with ``perf_counter_ns``, after a warm-up; also p50.

Progress goes to stderr (a rich progress bar); the last line of stdout is JSON with the keys above and detail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from statistics import NormalDist
from typing import Any

import numpy as np

from kawa.evaluation.assignment import Assigner
from kawa.evaluation.ope import doubly_robust
from kawa.evaluation.sequential import half_width, log_e_value, planned_mixing_variance, z_test_p

ALPHA = 0.05
BATCH = 25  # matured units per arm between two looks
AA_LOOKS = 40
CHUNK = 250  # runs simulated at once (bounds memory: CHUNK x looks x batch floats per arm)


class Progress:
    """A rich progress bar on stderr, or nothing (``--no-progress``, or rich missing)."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
                from rich.progress import Progress as Bar
            except ImportError:
                return
            self._bar = Bar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True))  # fmt: skip

    @contextmanager
    def task(self, name: str, total: int) -> Iterator[Any]:
        if self._bar is None:
            yield lambda k=1: None
            return
        task_id = self._bar.add_task(name, total=total)
        yield lambda k=1: self._bar.advance(task_id, k)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def peeking_runs(rng: np.random.Generator, runs: int, looks: int, effect: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run and look: difference of means (b - a), its variance and the total n (both arms)."""
    n = np.arange(1, looks + 1) * BATCH
    out = []
    for shift in (0.0, effect):
        y = rng.standard_normal((runs, looks * BATCH)) + shift
        s = np.cumsum(y, axis=1)[:, n - 1]
        ss = np.cumsum(y * y, axis=1)[:, n - 1]
        out.append((s / n, (ss - s * s / n) / (n - 1)))
    (m_a, v_a), (m_b, v_b) = out
    return m_b - m_a, v_a / n + v_b / n, np.broadcast_to(2 * n, m_a.shape)


def chunks(total: int) -> Iterator[int]:
    while total > 0:
        yield min(CHUNK, total)
        total -= CHUNK


def aa_false_positive_rates(rng: np.random.Generator, runs: int, tick: Any) -> dict[str, float]:
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * AA_LOOKS * BATCH)
    seq = naive = 0
    for k in chunks(runs):
        d, var, n = peeking_runs(rng, k, AA_LOOKS, 0.0)
        seq += int(np.any(log_e_value(d, var * n, n, rho2) >= math.log(1 / ALPHA), axis=1).sum())
        naive += int(np.any(z_test_p(d, var) <= ALPHA, axis=1).sum())
        tick(k)
    return {"aa_fpr_sequential": seq / runs, "aa_fpr_naive": naive / runs}


def cs_coverage(rng: np.random.Generator, runs: int, tick: Any, effect: float = 0.3) -> float:
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * AA_LOOKS * BATCH)
    covered = 0
    for k in chunks(runs):
        d, var, n = peeking_runs(rng, k, AA_LOOKS, effect)
        covered += int(np.all(np.abs(d - effect) <= half_width(var * n, n, ALPHA, rho2), axis=1).sum())
        tick(k)
    return covered / runs


def fixed_horizon_per_arm(delta: float, power: float = 0.8, sigma: float = 1.0) -> int:
    """Units per arm of a two-sided fixed-horizon z-test with this power at effect ``delta`` (stdlib quantiles)."""
    z = NormalDist()
    return math.ceil(2 * (z.inv_cdf(1 - ALPHA / 2) + z.inv_cdf(power)) ** 2 * sigma**2 / delta**2)


def time_to_decision(rng: np.random.Generator, runs: int, tick: Any, delta: float = 0.15) -> dict[str, Any]:
    per_arm = fixed_horizon_per_arm(delta)
    looks = math.ceil(3 * per_arm / BATCH)
    rho2 = planned_mixing_variance(ALPHA, horizon=2 * per_arm)
    fixed_look = round(per_arm / BATCH) - 1
    units: list[np.ndarray] = []
    fixed_rejects = 0
    for k in chunks(runs):
        d, var, n = peeking_runs(rng, k, looks, delta)
        rejected = log_e_value(d, var * n, n, rho2) >= math.log(1 / ALPHA)
        units.append(np.where(rejected.any(axis=1), n[0, rejected.argmax(axis=1)], np.inf))
        fixed_rejects += int((z_test_p(d[:, fixed_look], var[:, fixed_look]) <= ALPHA).sum())
        tick(k)
    u = np.concatenate(units)
    fixed = 2 * per_arm
    return {
        "median_units_to_decision": float(np.median(u)), "fixed_horizon_units": fixed,
        "fixed_horizon_power": fixed_rejects / runs,
        "sequential_decided_by_1x_2x_3x_fixed": [float(np.mean(u <= m * fixed)) for m in (1, 2, 3)],
        "units_to_decision_p90": float(np.quantile(u, 0.9)),
    }  # fmt: skip


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _ope_truth() -> float:
    """V(π) = 1 + E[sigmoid(x)(0.5 + x)], x ~ N(0, 1), by the trapezoidal rule on a fine grid."""
    x = np.linspace(-12.0, 12.0, 200_001)
    f = _sigmoid(x) * (0.5 + x) * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return 1.0 + float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x)))


def dr_coverage(rng: np.random.Generator, runs: int, tick: Any, units: int = 2000) -> dict[str, float]:
    truth, covered, width = _ope_truth(), 0, 0.0
    logging = np.array([0.7, 0.3])
    for run in range(runs):
        x = rng.standard_normal((units, 2))
        actions = (rng.uniform(size=units) < logging[1]).astype(np.int64)
        rewards = 1.0 + x[:, 1] + actions * (0.5 + x[:, 0]) + rng.standard_normal(units)
        p1 = _sigmoid(x[:, 0])
        res = doubly_robust(rewards, actions, np.tile(logging, (units, 1)), np.column_stack([1 - p1, p1]), x,
                            seed=run)  # fmt: skip
        covered += res.lower <= truth <= res.upper
        width += (res.upper - res.lower) / runs
        tick(1)
    return {"dr_coverage": covered / runs, "dr_mean_width": width, "dr_true_value": truth}


def assignment_cost(units: int, tick: Any) -> dict[str, float]:
    assigner = Assigner("bench-salt", [("champion", 0.45), ("challenger", 0.45), ("holdout", 0.10)])
    names = [f"patient-{i:07d}" for i in range(units)]
    for name in names[:2000]:  # warm-up
        assigner.assign(name)
    took = np.empty(units)
    clock = time.perf_counter_ns
    for i, name in enumerate(names):
        t0 = clock()
        assigner.assign(name)
        took[i] = clock() - t0
        if i % 1000 == 999:
            tick(1000)
    return {"assign_us_p50": float(np.quantile(took, 0.5)) / 1000, "assign_us_p99": float(np.quantile(took, 0.99))
            / 1000}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="A/A runs (coverage and time-to-decision: half)")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--assign-units", type=int, default=20_000)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 10:
        parser.error("--runs must be at least 10")
    rng = np.random.default_rng(args.seed)
    half, dr_runs = max(5, args.runs // 2), max(50, args.runs // 5)
    started = time.perf_counter()
    out: dict[str, Any] = {}
    with Progress(not args.no_progress) as bar:
        with bar.task("A/A under peeking", args.runs) as tick:
            out.update(aa_false_positive_rates(rng, args.runs, tick))
        with bar.task("CS coverage", half) as tick:
            out["cs_coverage"] = cs_coverage(rng, half, tick)
        with bar.task("time to decision", half) as tick:
            out.update(time_to_decision(rng, half, tick))
        with bar.task("DR coverage", dr_runs) as tick:
            out.update(dr_coverage(rng, dr_runs, tick))
        with bar.task("assignment", args.assign_units) as tick:
            out.update(assignment_cost(args.assign_units, tick))
    out.update({"runs": args.runs, "coverage_runs": half, "dr_runs": dr_runs, "seed": args.seed,
                "seconds": round(time.perf_counter() - started, 1), "machine": platform.machine(),
                "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)})  # fmt: skip
    goals = {"aa_fpr_sequential <= 0.06": out["aa_fpr_sequential"] <= 0.06,
             "aa_fpr_naive >= 0.2": out["aa_fpr_naive"] >= 0.2, "cs_coverage >= 0.95": out["cs_coverage"] >= 0.95,
             "assign_us_p99 <= 20": out["assign_us_p99"] <= 20}  # fmt: skip
    out["goals_met"] = all(goals.values())
    for name, ok in goals.items():
        print(f"{'ok  ' if ok else 'MISS'} {name}", file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
