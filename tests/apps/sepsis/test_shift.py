"""The epidemic seen within hours: the respiratory inputs drift (monitoring's KS test) and the alert rate
rises, while a run without an epidemic raises no drift at the same budget."""

from __future__ import annotations

import numpy as np

from kawa.apps.sepsis.alerts import AlertPolicy
from kawa.apps.sepsis.settings import Epidemic, SimSettings
from kawa.apps.sepsis.shift import first_shift, hourly_shift
from kawa.apps.sepsis.sim import simulate

ALPHA = 1e-4  # per hour and feature: 12 hours x 4 features, about one false alarm in 200 quiet runs
POLICY = AlertPolicy(5, 12, 1000)


def run(epidemic: Epidemic | None) -> tuple[float, list]:
    return hourly_shift(simulate(SimSettings(patients=800, hours=20, seed=12, epidemic=epidemic)), 8.0, POLICY)


def test_the_epidemic_is_seen_in_the_inputs_within_hours_and_not_without_it() -> None:
    _ref, epi = run(Epidemic(start_h=8.0, ramp_h=6.0))
    _ref0, calm = run(None)
    rr, spo2 = first_shift(epi, "rr_last", ALPHA), first_shift(epi, "spo2_last", ALPHA)
    assert rr is not None and rr <= 11 and spo2 is not None and spo2 <= 14, (rr, spo2)  # within 3 / 6 h of its start
    assert first_shift(epi, "hr_last", ALPHA) is None  # the epidemic leaves the pulse alone
    assert all(first_shift(calm, f, ALPHA) is None for f in ("rr_last", "spo2_last", "o2_flow_last", "hr_last"))
    late = slice(4, None)  # hours 12-19
    epi_rate = np.mean([h.alerts_per_100 for h in epi[late]])
    calm_rate = np.mean([h.alerts_per_100 for h in calm[late]])
    assert epi_rate > 1.5 * calm_rate, (epi_rate, calm_rate)
