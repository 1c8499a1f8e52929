"""A seeded, vectorised transaction simulator after the Fraud Detection Handbook's published design.

The design (Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud Detection*, ch. 3),
re-implemented here from its description:

- customers at uniform places on a 100x100 square, each with a mean amount U(5, 100), a standard deviation of
  half of it and a mean number of transactions a day U(0, 4); terminals at uniform places;
- a customer pays only at terminals within ``radius`` of home, chosen uniformly among them;
- each day a customer makes Poisson(mean) payments at times drawn from N(12:00, 20,000 s) (kept within the
  day), of amounts N(mean, std) (a negative draw is replaced by U(0, 2·mean)), rounded to cents;
- fraud scenario 1: every amount over 220 is fraud;
- scenario 2: every day 2 terminals (per 10,000) are compromised: all their payments of the next 28 days are fraud;
- scenario 3: every day 3 customers (per 5,000) are compromised: over the next 14 days a third of their
  payments get 5x amounts and are fraud;
- scenario 4 (new, for the retraining loop): from ``drift_day`` on, fraudsters switch from scenario 3 to card
  testing — every day 15 cards (per 5,000 customers) get a burst of 2-6 small payments (0.50-5.00) at night,
  a minute or two apart, at one random terminal. Amount, terminal risk and the old customer patterns miss it;
  a model retrained on labels after the drift learns it (night, small, several payments in a day).

At the book's size (5,000 customers, 10,000 terminals, 183 days) this gives about 1.75M payments and 0.8 %
fraud; at about 37,000 customers (terminals twice as many) about 13M, the Royal Bank of Canada's volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kawa.apps.fraud.transactions import F64, I64, SECONDS_PER_DAY, Transactions

_NEIGHBOUR_CHUNK = 2048


class SimSettings(BaseModel):
    """What the simulator lets you change; the defaults are the handbook's book data set plus scenario 4."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: int = Field(5000, ge=1)
    terminals: int | None = Field(None, ge=1, description="None: twice the customers (the book's density)")
    days: int = Field(183, ge=1)
    seed: int = 0
    start_date: date = date(2018, 4, 1)
    radius: float = Field(5.0, gt=0, description="customers pay at terminals within this distance")

    amount_threshold: float = Field(220.0, gt=0, description="scenario 1: larger amounts are fraud")
    compromised_terminals_per_day: float | None = Field(
        None, ge=0, description="scenario 2; None: 2 per 10,000 terminals (fractions are drawn per day)"
    )
    terminal_compromise_days: int = Field(28, ge=1)
    compromised_customers_per_day: float | None = Field(
        None, ge=0, description="scenario 3; None: 3 per 5,000 customers"
    )
    customer_compromise_days: int = Field(14, ge=1)
    compromised_share: float = Field(1 / 3, ge=0, le=1, description="scenario 3: share of payments defrauded")
    compromised_factor: float = Field(5.0, gt=0, description="scenario 3: amount multiplier")

    drift_day: int | None = Field(140, ge=0, description="scenario 4 starts this day; None: never")
    card_testing_per_day: float | None = Field(
        None, ge=0, description="scenario 4 cards a day; None: 15 per 5,000 customers"
    )
    drift_replaces_scenario3: bool = Field(
        True, description="from drift_day no new scenario-3 cards: the fraud moves to the new pattern"
    )
    burst_size: tuple[int, int] = Field((2, 6), description="scenario 4: payments a burst, inclusive range")
    burst_amount: tuple[float, float] = (0.5, 5.0)
    burst_start_hours: tuple[int, int] = Field((0, 5), description="a burst starts in [from, to) hours")
    burst_gap_seconds: tuple[int, int] = (10, 120)

    @model_validator(mode="after")
    def _ranges(self) -> SimSettings:
        if self.burst_size[0] < 1 or self.burst_size[0] > self.burst_size[1]:
            raise ValueError("burst_size must be (low, high) with 1 <= low <= high")
        if not 0 <= self.burst_start_hours[0] < self.burst_start_hours[1] <= 24:
            raise ValueError("burst_start_hours must be (from, to) with 0 <= from < to <= 24")
        return self

    @property
    def n_terminals(self) -> int:
        return self.terminals if self.terminals is not None else 2 * self.customers

    @property
    def terminals_per_day(self) -> float:
        rate = self.compromised_terminals_per_day
        return rate if rate is not None else 2.0 * self.n_terminals / 10_000

    @property
    def customers_per_day(self) -> float:
        rate = self.compromised_customers_per_day
        return rate if rate is not None else 3.0 * self.customers / 5_000

    @property
    def testing_per_day(self) -> float:
        rate = self.card_testing_per_day
        return rate if rate is not None else 15.0 * self.customers / 5_000


@dataclass(frozen=True, eq=False)
class Profiles:
    """Customer and terminal profiles, and each customer's terminals as CSR (``offsets``, ``terminals``)."""

    customer_xy: F64
    mean_amount: F64
    std_amount: F64
    mean_tx_per_day: F64
    terminal_xy: F64
    offsets: I64
    neighbours: I64

    @property
    def terminal_counts(self) -> I64:
        """How many terminals each customer can pay at."""
        return np.diff(self.offsets)


@dataclass(frozen=True, eq=False)
class Compromises:
    """Who was compromised from which day: scenario 2 terminals, scenario 3 and 4 customers."""

    terminal: I64
    terminal_day: I64
    customer: I64
    customer_day: I64
    testing_customer: I64
    testing_day: I64


@dataclass(frozen=True, eq=False)
class Simulation:
    settings: SimSettings
    profiles: Profiles
    compromises: Compromises
    tx: Transactions


def _draw(rng: np.random.Generator, population: int, rate: float) -> I64:
    """Distinct members of ``range(population)``, as many as ``rate`` on average: its integer part plus a
    Bernoulli draw of the fraction (so 0.4 terminals a day is 0 or 1 a day, 0.4 on average)."""
    whole = int(np.floor(rate))
    n = min(whole + int(rng.random() < rate - whole), population)
    return rng.choice(population, size=n, replace=False).astype(np.int64)


def profiles(settings: SimSettings, rng: np.random.Generator) -> Profiles:
    """Customers, terminals and which terminals each customer uses (within ``radius``)."""
    from scipy.spatial import cKDTree

    n_c, n_t = settings.customers, settings.n_terminals
    customer_xy = rng.uniform(0, 100, size=(n_c, 2))
    mean_amount = rng.uniform(5, 100, size=n_c)
    mean_tx = rng.uniform(0, 4, size=n_c)
    terminal_xy = rng.uniform(0, 100, size=(n_t, 2))
    tree = cKDTree(terminal_xy)
    counts = np.zeros(n_c, dtype=np.int64)
    parts: list[np.ndarray] = []
    for lo in range(0, n_c, _NEIGHBOUR_CHUNK):
        chunk = cKDTree(customer_xy[lo : lo + _NEIGHBOUR_CHUNK])
        pairs = chunk.sparse_distance_matrix(tree, settings.radius, output_type="ndarray")
        pairs = pairs[pairs["v"] < settings.radius]
        order = np.lexsort((pairs["j"], pairs["i"]))
        i, j = pairs["i"][order].astype(np.int64), pairs["j"][order].astype(np.int64)
        counts[lo : lo + _NEIGHBOUR_CHUNK] = np.bincount(i, minlength=min(_NEIGHBOUR_CHUNK, n_c - lo))
        parts.append(j)
    offsets = np.zeros(n_c + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    neighbours = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return Profiles(customer_xy, mean_amount, mean_amount / 2, mean_tx, terminal_xy, offsets, neighbours)


def _genuine(
    settings: SimSettings, prof: Profiles, rng: np.random.Generator
) -> tuple[I64, I64, I64, F64]:
    """Genuine payments ordered by (customer, day): customer, terminal, time (s), amount."""
    n_c, days = settings.customers, settings.days
    per_day = rng.poisson(np.repeat(prof.mean_tx_per_day, days)).astype(np.int64)
    cell = np.repeat(np.arange(n_c * days, dtype=np.int64), per_day)
    customer, day = cell // days, cell % days
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, size=len(cell))
    amount = rng.normal(prof.mean_amount[customer], prof.std_amount[customer])
    fallback = rng.uniform(0, 2 * prof.mean_amount[customer])
    pick = rng.random(len(cell))
    n_near = prof.terminal_counts[customer]
    keep = (seconds > 0) & (seconds < SECONDS_PER_DAY) & (n_near > 0)
    customer, day = customer[keep], day[keep]
    seconds, fallback, pick = seconds[keep], fallback[keep], pick[keep]
    amount = np.round(np.where(amount[keep] < 0, fallback, amount[keep]), 2).astype(np.float64)
    n_near = prof.terminal_counts[customer]
    terminal = prof.neighbours[prof.offsets[customer] + (pick * n_near).astype(np.int64)]
    time = day * SECONDS_PER_DAY + seconds.astype(np.int64)
    return customer, terminal, time, amount


def _card_testing(
    settings: SimSettings, rng: np.random.Generator
) -> tuple[I64, I64, I64, F64, I64, I64]:
    """Scenario 4 bursts: customer, terminal, time, amount of each payment; the cards and their days."""
    cards: list[int] = []
    card_days: list[int] = []
    if settings.drift_day is not None:
        for day in range(settings.drift_day, settings.days):
            drawn = _draw(rng, settings.customers, settings.testing_per_day)
            cards.extend(int(c) for c in drawn)
            card_days.extend([day] * len(drawn))
    card, card_day = np.array(cards, dtype=np.int64), np.array(card_days, dtype=np.int64)
    lo_n, hi_n = settings.burst_size
    sizes = rng.integers(lo_n, hi_n + 1, size=len(card))
    start = rng.integers(settings.burst_start_hours[0] * 3600, settings.burst_start_hours[1] * 3600, size=len(card))
    terminal_of_burst = rng.integers(0, settings.n_terminals, size=len(card))
    burst = np.repeat(np.arange(len(card)), sizes)
    gaps = rng.integers(settings.burst_gap_seconds[0], settings.burst_gap_seconds[1] + 1, size=len(burst))
    first = np.zeros(len(burst), dtype=bool)
    first[np.cumsum(sizes) - sizes] = True
    gaps[first] = 0
    cum = np.cumsum(gaps)
    offset = cum - np.repeat(cum[first], sizes)
    seconds = np.minimum(start[burst] + offset, SECONDS_PER_DAY - 1)
    time = card_day[burst] * SECONDS_PER_DAY + seconds
    amount = np.round(rng.uniform(settings.burst_amount[0], settings.burst_amount[1], size=len(burst)), 2)
    return card[burst], terminal_of_burst[burst], time.astype(np.int64), amount, card, card_day


def simulate(settings: SimSettings | None = None) -> Simulation:
    """Simulate ``settings.days`` days of payments with the four fraud scenarios; same settings, same table."""
    settings = settings or SimSettings()
    rng = np.random.default_rng(settings.seed)
    prof = profiles(settings, rng)
    customer, terminal, time, amount = _genuine(settings, prof, rng)
    day = time // SECONDS_PER_DAY
    scenario = np.zeros(len(time), dtype=np.int8)
    scenario[amount > settings.amount_threshold] = 1

    # Scenario 2: a terminal x day table of compromise, filled one drawing day at a time.
    compromised = np.zeros((settings.n_terminals, settings.days), dtype=bool)
    t_cases: list[int] = []
    t_days: list[int] = []
    for d in range(settings.days):
        drawn = _draw(rng, settings.n_terminals, settings.terminals_per_day)
        compromised[drawn, d : d + settings.terminal_compromise_days] = True
        t_cases.extend(int(x) for x in drawn)
        t_days.extend([d] * len(drawn))
    scenario[compromised[terminal, day]] = 2

    # Scenario 3: rows are ordered by (customer, day), so a customer's window is one contiguous slice.
    key = customer * settings.days + day
    c_cases: list[int] = []
    c_days: list[int] = []
    last = settings.days
    if settings.drift_replaces_scenario3 and settings.drift_day is not None:
        last = min(last, settings.drift_day)
    for d in range(last):
        end = min(d + settings.customer_compromise_days, settings.days)
        for c in _draw(rng, settings.customers, settings.customers_per_day).tolist():
            lo = int(np.searchsorted(key, c * settings.days + d))
            hi = int(np.searchsorted(key, c * settings.days + end))
            chosen = lo + rng.choice(hi - lo, size=int((hi - lo) * settings.compromised_share), replace=False)
            amount[chosen] = amount[chosen] * settings.compromised_factor
            scenario[chosen] = 3
            c_cases.append(int(c))
            c_days.append(d)

    b_customer, b_terminal, b_time, b_amount, cards, card_days = _card_testing(settings, rng)
    customer = np.concatenate([customer, b_customer])
    terminal = np.concatenate([terminal, b_terminal])
    time = np.concatenate([time, b_time])
    amount = np.concatenate([amount, b_amount])
    scenario = np.concatenate([scenario, np.full(len(b_time), 4, dtype=np.int8)])

    order = np.argsort(time, kind="stable")
    tx = Transactions(
        tx_id=np.arange(len(order), dtype=np.int64),
        customer_id=customer[order],
        terminal_id=terminal[order],
        time=time[order],
        amount=amount[order],
        is_fraud=scenario[order] > 0,
        scenario=scenario[order],
        start_date=settings.start_date,
    )
    comp = Compromises(
        terminal=np.array(t_cases, dtype=np.int64),
        terminal_day=np.array(t_days, dtype=np.int64),
        customer=np.array(c_cases, dtype=np.int64),
        customer_day=np.array(c_days, dtype=np.int64),
        testing_customer=cards,
        testing_day=card_days,
    )
    return Simulation(settings=settings, profiles=prof, compromises=comp, tx=tx)
