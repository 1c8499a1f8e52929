"""Batch scoring over Parquet: every row scored as in memory, through the store, in bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kawa.apps.fraud import engine
from kawa.apps.fraud.backfill import numpy_features
from kawa.apps.fraud.batch import score_job, score_parquet
from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.features import FeatureSpec
from kawa.apps.fraud.labels import oracle_labels
from kawa.apps.fraud.sim import Simulation
from kawa.apps.fraud.train import fit_lightgbm
from kawa.store.memory import MemoryStore

NAMES = list(FeatureSpec().names)


@pytest.fixture(scope="module")
def data(small_sim: Simulation, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, np.ndarray, Path]:
    tx = small_sim.tx
    x = numpy_features(tx, oracle_labels(tx, 7))
    booster = fit_lightgbm(x, tx.is_fraud, {"num_leaves": 7, "num_boost_round": 20})
    path = tmp_path_factory.mktemp("batch") / "features.parquet"
    pq.write_table(pa.table({"tx_id": tx.tx_id, "customer_id": tx.customer_id, "time": tx.time,
                             **{n: x[:, j] for j, n in enumerate(NAMES)}}), path, row_group_size=8192)
    return booster, x, path


def test_every_row_is_scored_as_in_memory(data: tuple[Any, np.ndarray, Path], tmp_path: Path) -> None:
    booster, x, path = data
    scorer = engine.build(booster, "lleaves", check=x[:2000])
    result = score_parquet(path, tmp_path / "out" / "scores.parquet", scorer, batch_rows=5000)
    out = pq.read_table(tmp_path / "out" / "scores.parquet")
    meta = pq.ParquetFile(path).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert result.rows == len(x) == out.num_rows and result.batches == sum(-(-g // 5000) for g in groups)
    assert out.column_names == ["tx_id", "customer_id", "time", "score"]
    assert np.array_equal(out.column("tx_id").to_numpy(), pq.read_table(path).column("tx_id").to_numpy())
    assert np.max(np.abs(out.column("score").to_numpy() - booster.predict(x))) <= 1e-9


def test_reads_and_writes_through_the_store(data: tuple[Any, np.ndarray, Path], tmp_path: Path) -> None:
    booster, x, path = data
    store = MemoryStore()
    store.create_bucket("fraud")
    with open(path, "rb") as f:
        store.put("fraud", "in/features.parquet", f)
    scorer = engine.build(booster, "lightgbm")
    result = score_parquet("store://fraud/in/features.parquet", "store://fraud/out/scores.parquet", scorer,
                           store=store)
    assert result.rows == len(x)
    with store.get("fraud", "out/scores.parquet") as reader:
        (tmp_path / "s.parquet").write_bytes(reader.read())
    assert np.allclose(pq.read_table(tmp_path / "s.parquet").column("score").to_numpy(), booster.predict(x))
    with pytest.raises(InvalidTransactions, match="store://bucket/key"):
        score_parquet("store://fraud", tmp_path / "x.parquet", scorer, store=store)


def test_memory_stays_bounded_by_the_batch(data: tuple[Any, np.ndarray, Path], tmp_path: Path) -> None:
    """Python/numpy allocations (tracemalloc) and Arrow's allocations during the run stay far below the
    data set's size; the same measurement on a whole-table read shows the data set (the control)."""
    booster, x, _ = data
    reps = 6  # ~217k rows x 15 features = 26 MB of float64
    big = tmp_path / "big.parquet"
    writer = pq.ParquetWriter(big, pa.schema([("tx_id", pa.int64()), *[(n, pa.float64()) for n in NAMES]]))
    for r in range(reps):
        writer.write_table(pa.table({"tx_id": np.arange(len(x)) + r * len(x),
                                     **{n: x[:, j] for j, n in enumerate(NAMES)}}), row_group_size=8192)
    writer.close()
    data_bytes = reps * x.nbytes
    scorer = engine.build(booster, "lightgbm", threads=1)
    arrow_peak = [0]
    base = pa.total_allocated_bytes()

    def sample(_: int) -> None:
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes() - base)

    tracemalloc.start()
    try:
        result = score_parquet(big, tmp_path / "s.parquet", scorer, batch_rows=8192, on_batch=sample)
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = pq.read_table(big).to_pandas().to_numpy()  # the control: everything at once
        _, control_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.rows == reps * len(x) and whole.shape[0] == result.rows
    assert py_peak < data_bytes / 8, (py_peak, data_bytes)
    assert arrow_peak[0] < data_bytes / 8, (arrow_peak[0], data_bytes)
    assert control_peak > data_bytes * 0.9  # the measurement sees a full load


def test_a_file_without_features_is_refused_with_what_to_do(tmp_path: Path) -> None:
    pq.write_table(pa.table({"tx_id": [1, 2], "amount": [3.0, 4.0]}), tmp_path / "raw.parquet")
    scorer = engine.Scorer("zero", lambda m: np.zeros(len(m)))
    with pytest.raises(InvalidTransactions, match="backfill the features first"):
        score_parquet(tmp_path / "raw.parquet", tmp_path / "o.parquet", scorer)


def test_the_job_entry_point_scores_a_model_file(data: tuple[Any, np.ndarray, Path], tmp_path: Path) -> None:
    booster, x, path = data
    booster.save_model(str(tmp_path / "model.txt"))
    out = score_job(str(tmp_path / "model.txt"), str(path), str(tmp_path / "scores.parquet"), engine="lleaves")
    assert out["rows"] == len(x) and out["engine"] == "lleaves" and out["max_abs_diff"] <= 1e-9
    assert np.max(np.abs(pq.read_table(tmp_path / "scores.parquet").column("score").to_numpy()
                         - booster.predict(x))) <= 1e-9
