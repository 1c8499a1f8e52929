"""Train the fraud model: ``kawa jobs submit kawa.apps.fraud.train:train``.

The handbook's protocol (:mod:`kawa.apps.fraud.baseline`): train on 7 days, skip the 7-day feedback delay (those
labels are not known when the model goes live), test on the next 7. Model selection is prequential: each point
of a small LightGBM grid is fitted and scored on validation folds that end before the test days (the protocol
moved back by delay + test length, then by one test length per fold), and the grid point with the best mean
CP@100 (ties: average precision) is refitted on the protocol's training days. The handbook's depth-2 tree is
scored on the same split. AUROC, AP and CP@100 of both go to the run; the booster is registered (flavour
``lightgbm``; score it with the gated compiled engine, :mod:`kawa.apps.fraud.engine`) with the data's lineage.
Everything is seeded: the simulator, LightGBM (``deterministic``) and the tree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from kawa.apps.fraud.backfill import numpy_features
from kawa.apps.fraud.baseline import Protocol, Scores, fit_tree, prequential, score, split
from kawa.apps.fraud.engine import require_lightgbm
from kawa.apps.fraud.errors import InvalidSettings
from kawa.apps.fraud.labels import oracle_labels
from kawa.apps.fraud.sim import SimSettings, simulate
from kawa.apps.fraud.transactions import F64, Transactions

if TYPE_CHECKING:
    from kawa.config import KawaConfig

GRID: tuple[dict[str, Any], ...] = (
    {"num_leaves": 15, "num_boost_round": 100, "learning_rate": 0.1},
    {"num_leaves": 31, "num_boost_round": 300, "learning_rate": 0.05},
)
"""The default selection grid (the second is the bench's 300 trees, 31 leaves)."""

MODEL_NAME = "fraud-lightgbm"


@dataclass(frozen=True)
class Candidate:
    """One grid point and its mean validation scores over the prequential folds."""

    params: dict[str, Any]
    cp_at_k: float
    ap: float
    auc: float


@dataclass(frozen=True)
class Trained:
    booster: Any
    params: dict[str, Any]
    candidates: tuple[Candidate, ...]
    model: Scores
    baseline: Scores
    train_rows: int


def fit_lightgbm(x: F64, y: Any, params: Mapping[str, Any], *, seed: int = 0, threads: int = 2) -> Any:
    """A binary LightGBM booster on ``x``, ``y``; ``params`` may hold ``num_boost_round``."""
    lightgbm = require_lightgbm()
    p = dict(params)
    rounds = int(p.pop("num_boost_round", 100))
    full = {"objective": "binary", "verbose": -1, "seed": seed, "deterministic": True, "force_row_wise": True,
            "num_threads": threads, **p}
    return lightgbm.train(full, lightgbm.Dataset(x, np.asarray(y, dtype=np.int64)), num_boost_round=rounds)


def validation_protocol(protocol: Protocol) -> Protocol:
    """The protocol moved back by delay + test length: its test days end before the real training starts
    plus the delay, so selection never sees the test week (the handbook's validation split)."""
    return replace(protocol, start_day=protocol.start_day - protocol.delay_days - protocol.test_days)


def select(tx: Transactions, features: F64, protocol: Protocol, grid: Sequence[Mapping[str, Any]], *,
           folds: int = 2, k: int = 100, seed: int = 0, threads: int = 2) -> tuple[Candidate, ...]:
    """Prequential validation of each grid point: mean CP@k, AP and AUROC over the validation folds."""
    splits = [s for s in prequential(tx, validation_protocol(protocol), folds=folds) if len(s[0]) and len(s[1])]
    if not splits:
        raise InvalidSettings(f"no validation fold fits before day {protocol.start_day}: start the protocol later "
                              "or simulate more days (each fold needs train + delay + test days)")
    out = []
    for params in grid:
        runs = []
        for train_rows, test_rows in splits:
            booster = fit_lightgbm(features[train_rows], tx.is_fraud[train_rows], params, seed=seed, threads=threads)
            runs.append(score(tx, test_rows, booster.predict(features[test_rows], num_threads=threads), k=k))
        out.append(Candidate(dict(params), float(np.mean([r.cp_at_k for r in runs])),
                             float(np.mean([r.ap for r in runs])), float(np.mean([r.auc for r in runs]))))
    return tuple(out)


def best(candidates: Sequence[Candidate]) -> Candidate:
    """The candidate with the highest CP@k, then AP, then the earlier one in the grid."""
    return max(candidates, key=lambda c: (c.cp_at_k, c.ap))  # max keeps the first of equals


def fit_and_test(tx: Transactions, features: F64, protocol: Protocol, grid: Sequence[Mapping[str, Any]], *,
                 folds: int = 2, k: int = 100, seed: int = 0, threads: int = 2) -> Trained:
    """Select on the validation folds, refit on the protocol's training days, score model and tree on its
    test days."""
    candidates = select(tx, features, protocol, grid, folds=folds, k=k, seed=seed, threads=threads)
    chosen = best(candidates)
    train_rows, test_rows = split(tx, protocol)
    y = tx.is_fraud[train_rows]
    booster = fit_lightgbm(features[train_rows], y, chosen.params, seed=seed, threads=threads)
    model = score(tx, test_rows, booster.predict(features[test_rows], num_threads=threads), k=k)
    tree = fit_tree(features[train_rows], y, seed=seed)
    baseline = score(tx, test_rows, tree.predict_proba(features[test_rows])[:, 1].astype(np.float64), k=k)
    return Trained(booster, chosen.params, candidates, model, baseline, len(train_rows))


def train(
    customers: int = 5000,
    days: int = 183,
    seed: int = 0,
    start_day: int | None = None,
    drift_day: int | None = 140,
    folds: int = 2,
    grid: list[dict[str, Any]] | None = None,
    k: int = 100,
    threads: int = 2,
    model_path: str | None = None,
    register: bool = True,
    model_name: str = MODEL_NAME,
    promote: Literal["if-none", "always", "never"] = "if-none",
    config: KawaConfig | None = None,
) -> dict[str, Any]:
    """Simulate ``customers`` over ``days`` (seeded), compute the features (oracle labels, 7-day delay),
    select and train the LightGBM model under the protocol starting at ``start_day`` (default 115, or
    ``days - 21``), log metrics and register it as ``model_name`` with its lineage. ``model_path`` also
    saves the booster as a LightGBM text file. Returns the metrics, the chosen params and the version."""
    started = time.perf_counter()
    sim_settings = SimSettings(customers=customers, days=days, seed=seed, drift_day=drift_day)
    tx = simulate(sim_settings).tx
    features = numpy_features(tx, oracle_labels(tx, 7))
    protocol = Protocol(start_day=start_day if start_day is not None else min(115, days - 21))
    trained = fit_and_test(tx, features, protocol, grid or list(GRID), folds=folds, k=k, seed=seed, threads=threads)
    metrics = {
        "auc": trained.model.auc, "ap": trained.model.ap, f"cp{k}": trained.model.cp_at_k,
        "auc_baseline": trained.baseline.auc, "ap_baseline": trained.baseline.ap,
        f"cp{k}_baseline": trained.baseline.cp_at_k,
    }
    result: dict[str, Any] = {**metrics, "params": trained.params, "train_rows": trained.train_rows,
                              "test_rows": trained.model.rows, "rows": len(tx),
                              "validation": [c.__dict__ for c in trained.candidates]}
    if model_path is not None:
        Path(model_path).parent.mkdir(parents=True, exist_ok=True)
        trained.booster.save_model(model_path)
        result["model_path"] = model_path
    if register:
        source = f"fraud-sim:customers={customers},days={days},seed={seed},drift_day={drift_day}"
        result.update(_track(trained, metrics, source, protocol, model_name, promote, config))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _track(trained: Trained, metrics: dict[str, float], source: str, protocol: Protocol, model_name: str,
           promote: str, config: KawaConfig | None) -> dict[str, Any]:
    from kawa.backends import open_backends
    from kawa.ml import tracking
    from kawa.ml.registry import Registry

    params = {**trained.params, "protocol_start_day": protocol.start_day, "train_days": protocol.train_days,
              "delay_days": protocol.delay_days, "test_days": protocol.test_days, "data": source}
    with open_backends(config) as backends:
        with tracking.run("fraud", run_name="fraud-lightgbm", params=params, config=backends.config) as run:
            run.log_lineage(source=source, description=f"simulated payments, training days {protocol.start_day}-"
                            f"{protocol.start_day + protocol.train_days - 1}")
            run.log_metrics(metrics)
            for i, c in enumerate(trained.candidates):
                run.log_metrics({"validation_cp": c.cp_at_k, "validation_ap": c.ap}, step=i)
            version = run.log_model(trained.booster, flavor="lightgbm", register_as=model_name)
            out: dict[str, Any] = {"model": model_name, "version": version, "run_id": run.run_id,
                                   "promoted": False}
        if version is None:
            return out
        registry = Registry(backends)
        try:
            current = registry.alias_target(model_name, "champion")
            if promote == "always" or (promote == "if-none" and current is None):
                registry.promote(model_name, version, "champion")
                out["promoted"] = True
        finally:
            registry.close()
    return out
