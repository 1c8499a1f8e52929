"""Shared simulations of the fraud tests: small, seeded, built once per session."""

from __future__ import annotations

import pytest

from kawa.apps.fraud.sim import SimSettings, Simulation, simulate


@pytest.fixture(scope="session")
def small_sim() -> Simulation:
    """300 customers, 600 terminals, 60 days, card testing from day 30: about 36k payments."""
    return simulate(SimSettings(customers=300, days=60, drift_day=30, seed=3))


@pytest.fixture(scope="session")
def design_sim() -> Simulation:
    """1,000 customers and 2,000 terminals over the book's 183 days (the book's densities), card testing from 140."""
    return simulate(SimSettings(customers=1000, days=183, seed=11))
