"""Feature parity: the stream's state machine, DuckDB SQL and numpy give the same features (to 1e-9), and they
are the handbook's definitions (checked against pandas rolling windows and hand-computed cases)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.apps.fraud.backfill import duckdb_features, numpy_features
from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.features import (
    FeatureSpec,
    FeatureState,
    Outcome,
    Payment,
    observe_label,
    stream_features,
    update,
)
from kawa.apps.fraud.labels import LabelEvents, chargebacks, investigate, merge, oracle_labels
from kawa.apps.fraud.sim import Simulation
from kawa.apps.fraud.transactions import SECONDS_PER_DAY, Transactions

DAY = SECONDS_PER_DAY
NAMES = FeatureSpec().names


def _table(customer: list[int], terminal: list[int], time: list[int], amount: list[float],
           fraud: list[bool] | None = None) -> Transactions:
    n = len(time)
    order = np.argsort(np.array(time), kind="stable")
    is_fraud = np.array(fraud if fraud is not None else [False] * n)[order]
    return Transactions(
        tx_id=np.arange(n, dtype=np.int64), customer_id=np.array(customer, dtype=np.int64)[order],
        terminal_id=np.array(terminal, dtype=np.int64)[order], time=np.array(time, dtype=np.int64)[order],
        amount=np.array(amount, dtype=np.float64)[order], is_fraud=is_fraud,
        scenario=is_fraud.astype(np.int8), start_date=date(2018, 4, 1),
    )


@pytest.mark.parametrize("labels", ["oracle", "investigations+chargebacks"])
def test_stream_equals_duckdb_and_numpy_on_simulator_data(small_sim: Simulation, labels: str) -> None:
    tx = small_sim.tx
    if labels == "oracle":
        events = oracle_labels(tx, 7)
    else:
        score = np.random.default_rng(1).random(len(tx)) + tx.is_fraud * 0.5
        events = merge(chargebacks(tx, seed=2), investigate(tx, score, k=20, seed=3)[1])
    stream = stream_features(tx, events)
    sql = duckdb_features(tx, events)
    vec = numpy_features(tx, events)
    assert stream.shape == sql.shape == (len(tx), len(NAMES))
    np.testing.assert_allclose(stream, sql, rtol=0, atol=1e-9)
    np.testing.assert_allclose(stream, vec, rtol=0, atol=1e-9)
    risk = stream[:, [NAMES.index(f"terminal_risk_{w}d") for w in (1, 7, 30)]]
    assert (risk > 0).sum(axis=0).min() > 100  # the risk windows are exercised, not all zero


def _rolling(df: pd.DataFrame, key: str, days: int, col: str, how: str = "sum") -> np.ndarray:
    roll = getattr(df.groupby(key).rolling(f"{days}D", on="ts")[col], how)()
    out = np.empty(len(df))
    out[np.argsort(df[key].to_numpy(), kind="stable")] = roll.to_numpy()  # groups in order, rows in order
    return out


def test_features_are_the_handbooks_pandas_rolling_windows(small_sim: Simulation) -> None:
    """An independent implementation, as the handbook defines them: pandas time-based rolling windows per
    customer, and terminal counts and frauds over (t - d - w, t] minus those over (t - d, t], all labels known."""
    tx = small_sim.tx.take(np.arange(12_000))
    ours = numpy_features(tx, oracle_labels(tx, 7))
    df = pd.DataFrame({"c": tx.customer_id, "m": tx.terminal_id, "amount": tx.amount, "fraud": tx.is_fraud * 1.0,
                       "one": 1.0, "ts": pd.to_datetime(tx.time, unit="s")})
    for w in (1, 7, 30):
        np.testing.assert_allclose(ours[:, NAMES.index(f"customer_nb_tx_{w}d")], _rolling(df, "c", w, "one"),
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[:, NAMES.index(f"customer_avg_amount_{w}d")],
                                   _rolling(df, "c", w, "amount", "mean"), rtol=0, atol=1e-6)
        n_tx = _rolling(df, "m", 7 + w, "one") - _rolling(df, "m", 7, "one")
        frauds = _rolling(df, "m", 7 + w, "fraud") - _rolling(df, "m", 7, "fraud")
        risk = np.divide(frauds, n_tx, out=np.zeros(len(tx)), where=n_tx > 0)
        np.testing.assert_allclose(ours[:, NAMES.index(f"terminal_nb_tx_{w}d")], n_tx, rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[:, NAMES.index(f"terminal_risk_{w}d")], risk, rtol=0, atol=1e-9)
    assert ours[:, NAMES.index("terminal_risk_30d")].max() > 0


def _label(tx_time: int, observed_at: int) -> LabelEvents:
    return LabelEvents(tx_id=np.array([0]), customer_id=np.array([1]), terminal_id=np.array([5]),
                       tx_time=np.array([tx_time]), observed_at=np.array([observed_at]),
                       is_fraud=np.array([True]), source=np.array([2], dtype=np.int8))


def _all_three(tx: Transactions, labels: LabelEvents) -> list[np.ndarray]:
    return [stream_features(tx, labels), duckdb_features(tx, labels), numpy_features(tx, labels)]


def test_window_edges_same_second_ties_and_labels_in_time() -> None:
    # Customer 1 pays twice in the same second (the first is fraud), then exactly one day later; customer 2
    # pays at the same terminal exactly 7 days after (t - d = 0: nothing yet) and 7 days + 100 s after.
    tx = _table(customer=[1, 1, 1, 2, 2], terminal=[5, 5, 5, 5, 5],
                time=[100, 100, 100 + DAY, 7 * DAY, 7 * DAY + 100], amount=[10.0, 20.0, 30.0, 1.0, 2.0],
                fraud=[True, False, False, False, False])
    c1, a1, c7 = NAMES.index("customer_nb_tx_1d"), NAMES.index("customer_avg_amount_1d"), NAMES.index(
        "customer_nb_tx_7d")
    m1, r1, r7 = NAMES.index("terminal_nb_tx_1d"), NAMES.index("terminal_risk_1d"), NAMES.index("terminal_risk_7d")
    for observed, risk in ((7 * DAY + 100, 0.5), (7 * DAY + 101, 0.0)):  # a label counts once observed_at <= t
        for f in _all_three(tx, _label(100, observed)):
            assert f[0, c1] == 1 and f[1, c1] == 2 and f[1, a1] == 15.0  # the later tie is not in the first
            assert f[2, c1] == 1 and f[2, c7] == 3  # (t - 1 day, t] leaves out t - 1 day itself
            assert f[3, m1] == 0 and f[3, r1] == 0  # (t - 8d, t - 7d] = (-1d, 0]: empty
            assert f[4, m1] == 2 and f[4, r1] == risk and f[4, r7] == risk  # (-1d + 100, 100]: both at t=100


def test_weekend_and_night_flags() -> None:
    # 2018-04-01 is a Sunday: day 0 weekend, day 1 (Monday) not; 06:59 is night, 07:00 is not.
    tx = _table(customer=[1, 1, 1], terminal=[1, 1, 1], time=[3600, DAY + 6 * 3600 + 3599, DAY + 7 * 3600],
                amount=[1.0, 1.0, 1.0])
    f = numpy_features(tx, oracle_labels(tx))
    np.testing.assert_array_equal(f[:, 1], [1, 0, 0])
    np.testing.assert_array_equal(f[:, 2], [1, 1, 0])
    np.testing.assert_array_equal(stream_features(tx, oracle_labels(tx)), f)


def test_the_stream_refuses_events_out_of_time_order() -> None:
    state = FeatureState()
    update(state, Payment(0, 1, 1, 1000, 5.0))
    with pytest.raises(InvalidTransactions, match="time order"):
        update(state, Payment(1, 1, 1, 999, 5.0))
    with pytest.raises(InvalidTransactions, match="time order"):
        observe_label(state, Outcome(0, 1, 0, 10, True))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 40 * DAY // 3600),
                          st.integers(1, 50_000), st.booleans(), st.integers(1, 20 * 24)),
                min_size=1, max_size=60))
def test_parity_holds_for_any_small_table(rows: list[tuple[int, int, int, int, bool, int]]) -> None:
    """Hours as times make ties and exact window edges common; label delays vary from 1 hour to 20 days."""
    tx = _table(customer=[r[0] for r in rows], terminal=[r[1] for r in rows], time=[r[2] * 3600 for r in rows],
                amount=[r[3] / 100 for r in rows], fraud=[r[4] for r in rows])
    delay = np.array([r[5] for r in rows], dtype=np.int64)[np.argsort([r[2] for r in rows], kind="stable")] * 3600
    labels = merge(LabelEvents(tx_id=tx.tx_id, customer_id=tx.customer_id, terminal_id=tx.terminal_id,
                               tx_time=tx.time, observed_at=tx.time + delay, is_fraud=tx.is_fraud,
                               source=np.ones(len(tx), dtype=np.int8)))
    stream = stream_features(tx, labels)
    np.testing.assert_allclose(stream, numpy_features(tx, labels), rtol=0, atol=1e-9)
    np.testing.assert_allclose(stream, duckdb_features(tx, labels, threads=1), rtol=0, atol=1e-9)


def test_long_histories_are_compacted_and_stay_exact() -> None:
    """A busy card at two busy terminals over 120 days: the state drops what left every window (bounded
    memory) and the features stay equal to the batch ones."""
    rng = np.random.default_rng(4)
    n = 4000
    time = np.sort(rng.integers(0, 120 * DAY, n)).tolist()
    tx = _table(customer=[7] * n, terminal=rng.integers(0, 2, n).tolist(), time=time,
                amount=(rng.integers(1, 10_000, n) / 100).tolist(), fraud=(rng.random(n) < 0.2).tolist())
    labels = oracle_labels(tx, 7)
    np.testing.assert_allclose(stream_features(tx, labels), numpy_features(tx, labels), rtol=0, atol=1e-9)
    state = FeatureState()
    events = sorted([(t, 1, i) for i, t in enumerate(tx.time.tolist())]
                    + [(o, 0, i) for i, o in enumerate(labels.observed_at.tolist())])
    for _, kind, i in events:
        if kind:
            update(state, Payment(i, 7, int(tx.terminal_id[i]), int(tx.time[i]), float(tx.amount[i])))
        else:
            observe_label(state, Outcome(int(labels.tx_id[i]), int(labels.terminal_id[i]), int(labels.tx_time[i]),
                                         int(labels.observed_at[i]), bool(labels.is_fraud[i])))
    last_30 = int(np.sum(tx.time > tx.time[-1] - 30 * DAY))
    assert len(state.customers[7].times) <= last_30 + 257
    for term in state.terminals.values():
        assert len(term.times) <= 2 * last_30 + 257 and len(term.frauds) <= len(term.times)


def test_the_sql_backfill_says_how_to_get_duckdb(monkeypatch: pytest.MonkeyPatch, small_sim: Simulation) -> None:
    import sys

    from kawa.apps.fraud.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now raises ImportError
    tx = small_sim.tx.take(np.arange(10))
    with pytest.raises(MissingDependency, match="pip install duckdb"):
        duckdb_features(tx, oracle_labels(tx))
