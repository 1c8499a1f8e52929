"""Delayed labels: who gets a label, when, and with what propensity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from kawa.apps.fraud.errors import InvalidTransactions
from kawa.apps.fraud.labels import (
    CHARGEBACK,
    INVESTIGATION,
    chargebacks,
    daily_card_scores,
    first_fraud_labels,
    investigate,
    merge,
    oracle_labels,
)
from kawa.apps.fraud.sim import Simulation
from kawa.apps.fraud.transactions import SECONDS_PER_DAY

DAY = SECONDS_PER_DAY


def test_oracle_labels_every_payment_exactly_the_delay_later(small_sim: Simulation) -> None:
    tx = small_sim.tx
    lab = oracle_labels(tx, 7)
    assert len(lab) == len(tx)
    order = np.argsort(lab.tx_id)
    np.testing.assert_array_equal(lab.observed_at[order] - tx.time, 7 * DAY)
    np.testing.assert_array_equal(lab.is_fraud[order], tx.is_fraud)
    assert np.all(np.diff(lab.observed_at) >= 0)


def test_chargebacks_dispute_a_share_of_frauds_after_a_lognormal_delay(small_sim: Simulation) -> None:
    tx = small_sim.tx
    cb = chargebacks(tx, share=0.7, median_days=10, sigma=0.6, seed=4)
    n_fraud = int(tx.is_fraud.sum())
    assert np.all(cb.is_fraud) and np.all(cb.source == CHARGEBACK)
    assert stats.binomtest(len(cb), n_fraud, 0.7).pvalue > 1e-3
    delay_days = (cb.observed_at - cb.tx_time) / DAY
    assert stats.kstest(delay_days, stats.lognorm(0.6, scale=10).cdf).pvalue > 1e-3
    assert np.all(tx.is_fraud[cb.tx_id]) and np.array_equal(tx.terminal_id[cb.tx_id], cb.terminal_id)


def test_investigations_label_the_top_k_cards_and_a_random_share(small_sim: Simulation) -> None:
    tx = small_sim.tx
    score = np.random.default_rng(0).random(len(tx))
    cases, lab = investigate(tx, score, k=10, explore=3, delay_days=(1, 3), seed=5)
    for d in np.unique(cases.day)[:10]:
        today = cases.day == d
        top = today & (cases.propensity == 1.0)
        assert top.sum() == min(10, today.sum())
        assert cases.score[top].min() >= cases.score[today & ~top].max()
        assert (today & cases.explored).sum() == min(3, (today & ~top).sum())
        rest = today & ~top
        np.testing.assert_allclose(cases.propensity[rest], 3 / rest.sum())
    assert np.all(lab.source == INVESTIGATION)
    # An investigated card has every payment of that day labelled, with its true label, 1-3 days after the day.
    *_, group = daily_card_scores(tx, score)
    labelled = np.zeros(len(tx), dtype=bool)
    labelled[lab.tx_id] = True
    np.testing.assert_array_equal(labelled, cases.investigated[group])
    np.testing.assert_array_equal(lab.is_fraud, tx.is_fraud[lab.tx_id])
    after = lab.observed_at - (lab.tx_time // DAY + 1) * DAY
    assert after.min() >= DAY and after.max() <= 3 * DAY


def test_exploration_propensities_make_an_unbiased_estimate() -> None:
    """Seeded simulation: inverse-propensity weighting of the explored cards estimates the number of
    compromised cards outside the top-k without bias (the off-policy evaluation the propensities are for)."""
    from kawa.apps.fraud.sim import SimSettings, simulate

    tx = simulate(SimSettings(customers=150, days=8, drift_day=None, seed=9)).tx
    tx = tx.take(tx.day == 7)
    score = np.random.default_rng(1).random(len(tx))
    day, _, _, group = daily_card_scores(tx, score)
    fraud_card = np.zeros(len(day), dtype=bool)
    np.logical_or.at(fraud_card, group, tx.is_fraud)
    estimates, truth = [], None
    for seed in range(300):
        cases, _ = investigate(tx, score, k=20, explore=10, seed=seed)
        rest = cases.propensity < 1
        truth = int(fraud_card[rest].sum())
        estimates.append(float(np.sum(fraud_card[cases.explored] / cases.propensity[cases.explored])))
    assert truth is not None and truth > 0
    sem = np.std(estimates) / np.sqrt(len(estimates))
    assert abs(np.mean(estimates) - truth) < 4 * sem


def test_merge_orders_by_observation_and_first_fraud_label_wins(small_sim: Simulation) -> None:
    tx = small_sim.tx
    both = merge(chargebacks(tx, seed=1), oracle_labels(tx, 7))
    assert np.all(np.diff(both.observed_at) >= 0)
    first = first_fraud_labels(both)
    assert len(first) == int(tx.is_fraud.sum()) and len(np.unique(first.tx_id)) == len(first)
    earliest = {}
    for t, o in zip(both.tx_id[both.is_fraud].tolist(), both.observed_at[both.is_fraud].tolist(), strict=True):
        earliest.setdefault(t, o)
    assert dict(zip(first.tx_id.tolist(), first.observed_at.tolist(), strict=True)) == earliest


def test_label_contracts_say_what_to_fix(small_sim: Simulation) -> None:
    tx = small_sim.tx
    with pytest.raises(InvalidTransactions, match="one score a payment"):
        investigate(tx, np.zeros(3))
    lab = oracle_labels(tx.take(np.arange(3)))
    with pytest.raises(InvalidTransactions, match="before its payment"):
        type(lab)(**{**{k: getattr(lab, k) for k in lab.__dataclass_fields__}, "observed_at": lab.tx_time - 1})
