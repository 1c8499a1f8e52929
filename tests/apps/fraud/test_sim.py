"""The simulator's scenario statistics, against the handbook's design and independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.sim import SimSettings, Simulation, simulate
from kawa.apps.fraud.transactions import SECONDS_PER_DAY, Transactions


def test_same_seed_same_table_and_sorted_by_time() -> None:
    a = simulate(SimSettings(customers=60, days=20, seed=1)).tx
    b = simulate(SimSettings(customers=60, days=20, seed=1)).tx
    c = simulate(SimSettings(customers=60, days=20, seed=2)).tx
    for name, col in a.columns().items():
        np.testing.assert_array_equal(col, b.columns()[name])
    assert len(a) != len(c) or not np.array_equal(a.amount, c.amount)
    assert np.all(np.diff(a.time) >= 0)
    np.testing.assert_array_equal(a.tx_id, np.arange(len(a)))
    assert a.to_arrow().num_rows == len(a)


def test_fraud_share_and_share_per_scenario_match_the_book(design_sim: Simulation) -> None:
    tx = design_sim.tx
    share = np.bincount(tx.scenario, minlength=5) / len(tx)
    # The book: 0.84 % fraud (1: 0.06 %, 2: 0.52 %, 3: 0.26 %); rows ≈ customers x 183 x 2 x 0.969.
    assert 0.9 * 1000 * 183 * 2 * 0.969 < len(tx) < 1.1 * 1000 * 183 * 2 * 0.969
    assert 0.006 < tx.is_fraud.mean() < 0.011
    assert 0.0003 < share[1] < 0.001
    assert 0.0035 < share[2] < 0.0075
    assert 0.0012 < share[3] < 0.0040
    assert 0.0005 < share[4] < 0.003  # 3 cards x 4 payments x 43 days / 355k rows = 0.15 %
    np.testing.assert_array_equal(tx.is_fraud, tx.scenario > 0)


def test_scenario1_count_matches_the_normal_tail(design_sim: Simulation) -> None:
    tx, prof = design_sim.tx, design_sim.profiles
    base = tx.scenario != 4
    counts = np.bincount(tx.customer_id[base], minlength=len(prof.mean_amount))
    expected = float(np.sum(counts * stats.norm.sf(220, prof.mean_amount, prof.std_amount)))
    original = np.where(tx.scenario == 3, tx.amount / 5, tx.amount)
    observed = int(np.sum(base & (original > 220)))
    assert abs(observed - expected) < 4 * np.sqrt(expected)
    assert np.all(tx.amount[tx.scenario == 1] > 220)
    assert not np.any(tx.amount[tx.scenario == 0] > 220)


def test_times_of_day_and_terminals_within_radius(design_sim: Simulation) -> None:
    tx, prof = design_sim.tx, design_sim.profiles
    seconds = (tx.time % SECONDS_PER_DAY)[tx.scenario != 4]
    sample = np.random.default_rng(0).choice(seconds, 20_000, replace=False)
    law = stats.truncnorm(-43_200 / 20_000, 43_200 / 20_000, loc=43_200, scale=20_000)
    assert stats.kstest(sample + 0.5, law.cdf).pvalue > 1e-3
    for c in range(0, 1000, 20):  # brute force: every terminal closer than the radius, and only those
        dist = np.hypot(*(prof.terminal_xy - prof.customer_xy[c]).T)
        near = prof.neighbours[prof.offsets[c] : prof.offsets[c + 1]]
        np.testing.assert_array_equal(near, np.flatnonzero(dist < 5.0))
    pay = tx.scenario != 4  # card testing happens anywhere; every other payment is near home
    dist = np.hypot(*(prof.terminal_xy[tx.terminal_id[pay]] - prof.customer_xy[tx.customer_id[pay]]).T)
    assert dist.max() < 5.0


def test_compromised_terminals_defraud_exactly_their_28_days(design_sim: Simulation) -> None:
    tx, comp = design_sim.tx, design_sim.compromises
    day = tx.day
    marked = {(int(m), d) for m, d0 in zip(comp.terminal, comp.terminal_day, strict=True) for d in range(d0, d0 + 28)}
    in_window = np.array([(m, d) in marked for m, d in zip(tx.terminal_id.tolist(), day.tolist(), strict=True)])
    plain = tx.scenario <= 2
    np.testing.assert_array_equal(in_window[plain], tx.scenario[plain] == 2)
    assert np.all(tx.scenario[in_window] >= 2)
    spans = []
    for m, d0 in zip(comp.terminal, comp.terminal_day, strict=True):
        others = comp.terminal_day[(comp.terminal == m) & (comp.terminal_day != d0)]
        if np.any(np.abs(others - d0) < 56) or d0 + 28 > 183:
            continue
        near = (day >= d0 - 28) & (day < d0 + 56)  # only this event compromised m in these days
        s2_days = day[(tx.terminal_id == m) & (tx.scenario == 2) & near]
        if len(s2_days):
            assert d0 <= s2_days.min() and s2_days.max() < d0 + 28
            spans.append(s2_days.max() - d0 + 1)
    assert len(spans) > 30
    assert np.median(spans) >= 25


def test_compromised_cards_lose_a_third_of_14_days_at_five_times(design_sim: Simulation) -> None:
    tx, comp = design_sim.tx, design_sim.compromises
    day = tx.day
    checked, ratios = 0, []
    for c, d0 in zip(comp.customer, comp.customer_day, strict=True):
        others = comp.customer_day[(comp.customer == c) & (comp.customer_day != d0)]
        if np.any(np.abs(others - d0) < 28):
            continue
        mine = (tx.customer_id == c) & (tx.scenario != 4)
        window = mine & (day >= d0) & (day < d0 + 14)
        # No other event within 28 days: scenario-3 rows in [d0 - 14, d0 + 28) come from this one alone.
        s3 = mine & (tx.scenario == 3) & (day >= d0 - 14) & (day < d0 + 28)
        assert np.all(window[s3])
        assert s3.sum() == int(window.sum() / 3)
        checked += 1
        if s3.any():
            ratios.append(tx.amount[s3].sum() / (5 * design_sim.profiles.mean_amount[c] * s3.sum()))
    assert checked > 80
    assert 0.85 < np.mean(ratios) < 1.15


def test_card_testing_starts_on_the_drift_day_and_replaces_scenario3(design_sim: Simulation) -> None:
    tx, comp = design_sim.tx, design_sim.compromises
    s4 = tx.scenario == 4
    assert tx.day[s4].min() >= 140
    assert comp.customer_day.max() < 140 <= comp.testing_day.min()
    assert np.all((tx.time[s4] % SECONDS_PER_DAY) < 7 * 3600)
    assert np.all((tx.amount[s4] >= 0.5) & (tx.amount[s4] <= 5.0))
    for c, d in zip(comp.testing_customer, comp.testing_day, strict=True):
        burst = s4 & (tx.customer_id == c) & (tx.day == d)
        assert 2 <= burst.sum() <= 6 * np.sum((comp.testing_customer == c) & (comp.testing_day == d))
    # 3 cards a day for 1,000 customers (15 per 5,000), over 43 days.
    assert abs(len(comp.testing_customer) - 3 * 43) < 4 * np.sqrt(3 * 43)


def test_no_drift_keeps_the_three_book_scenarios() -> None:
    tx = simulate(SimSettings(customers=200, days=40, drift_day=None, seed=5)).tx
    assert set(np.unique(tx.scenario)) <= {0, 1, 2, 3}


def test_invalid_settings_and_tables_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="burst_size"):
        SimSettings(burst_size=(9, 3))
    one = np.zeros(2, dtype=np.int64)
    with pytest.raises(InvalidTransactions, match="sorted by time"):
        Transactions(one, one, one, np.array([5, 1]), np.zeros(2), np.zeros(2, bool), np.zeros(2, np.int8))
    with pytest.raises(InvalidTransactions, match="equal lengths"):
        Transactions(one, one, one, one, np.zeros(3), np.zeros(2, bool), np.zeros(2, np.int8))


def test_a_table_round_trips_through_arrow(design_sim: Simulation) -> None:
    tx = design_sim.tx.take(np.arange(500))
    back = Transactions.from_columns(tx.to_arrow(), start_date=tx.start_date)
    for name, col in tx.columns().items():
        np.testing.assert_array_equal(back.columns()[name], col)
    bare = Transactions.from_columns({k: v for k, v in tx.columns().items() if k not in ("is_fraud", "scenario")})
    assert not bare.is_fraud.any() and len(bare) == 500
    with pytest.raises(InvalidTransactions, match="missing"):
        Transactions.from_columns({"tx_id": tx.tx_id})
