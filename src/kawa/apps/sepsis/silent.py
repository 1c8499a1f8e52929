"""A randomised silent arm: the causal effect of *showing* alerts, with always-valid intervals.

Patients are randomised (sticky, by pseudonym: :func:`kawa.evaluation.assignment.assign`) to ``shown`` or
``silent``; every alert is computed in both arms, only the shown arm's reach the clinicians. The
intention-to-treat effects are differences between the arms as randomised (no patient is dropped for not
being alerted):

- **mortality**: P(death | shown) - P(death | silent) over all patients (negative = lives saved);
- **antibiotic delay**: mean hours from onset to antibiotics (capped at ``max_delay_h``, never treated
  counts as the cap) in the shown arm minus the silent arm, over septic patients (onset is computed on the
  untreated course, so who is septic does not depend on the arm).

Intervals are the evaluation capability's always-valid ones (:func:`kawa.evaluation.sequential.
proportion_difference` / ``mean_difference``, the mixing variance planned for the trial's size), so they hold
at every look. The simulator knows the counterfactuals, so the **true** effects are exact: the mean over the
same patients of the outcome with every alert shown minus with none shown (probabilities, not draws).

The first alert of a patient is computed on the course without alert-driven antibiotics; it is the same in
both worlds because nothing the alert changes comes before it (the simulated clinicians act on the first
alert only). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.care import death_probability, outcomes, respond
from kawa.apps.sepsis.sim import Simulation

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

__all__ = ["Effect", "Trial", "arms_of", "silent_arm_trial"]


@dataclass(frozen=True)
class Effect:
    """An ITT estimate (shown - silent), its always-valid interval, and the simulator's true effect."""

    estimate: float
    lower: float
    upper: float
    true: float
    n: int

    @property
    def covers(self) -> bool:
        return self.lower <= self.true <= self.upper


@dataclass(frozen=True)
class Trial:
    mortality: Effect
    antibiotic_delay_h: Effect
    shown: int
    silent: int


def arms_of(pseudonyms: list[str], salt: str, shown_share: float = 0.5) -> B:
    """Whether each patient is in the shown arm (sticky per pseudonym and salt)."""
    from kawa.evaluation.assignment import Assigner

    assigner = Assigner(salt, (("shown", shown_share), ("silent", 1.0 - shown_share)))
    return np.array([assigner.assign(u).arm == "shown" for u in pseudonyms], dtype=bool)


def _delay(sim: Simulation, treatment_h: F) -> F:
    cap = sim.settings.max_delay_h
    out: F = np.clip(np.nan_to_num(treatment_h - sim.outcomes.onset_h, nan=cap), 0.0, cap)
    return out


def silent_arm_trial(sim: Simulation, first_alert_h: F, shown: B, *, alpha: float = 0.05) -> Trial:
    """The trial on ``sim`` (simulated without alerts) with each patient's first alert (NaN: none) shown
    where ``shown``: what the clinicians did, who died, the ITT estimates and the true effects."""
    from kawa.evaluation.sequential import mean_difference, planned_mixing_variance, proportion_difference

    p, s = sim.patients, sim.settings
    everyone = respond(p, s, first_alert_h)
    nobody = respond(p, s, None)
    care = respond(p, s, np.where(shown, first_alert_h, np.nan))
    died = outcomes(p, s, care).died
    n = len(p)
    rho2 = planned_mixing_variance(alpha, n)
    m = proportion_difference(int((~shown).sum()), int(died[~shown].sum()), int(shown.sum()), int(died[shown].sum()),
                              alpha=alpha, rho2=rho2)  # fmt: skip
    true_m = float(np.mean(death_probability(p, s, everyone.treatment_h) - death_probability(p, s, nobody.treatment_h)))
    septic = p.septic
    d = _delay(sim, care.treatment_h)
    a, b = d[septic & ~shown], d[septic & shown]
    rho2_d = planned_mixing_variance(alpha, max(2, int(septic.sum())))
    delay = mean_difference(len(a), float(a.mean()), float(a.var(ddof=1)), len(b), float(b.mean()),
                            float(b.var(ddof=1)), alpha=alpha, rho2=rho2_d)  # fmt: skip
    true_d = float(np.mean((_delay(sim, everyone.treatment_h) - _delay(sim, nobody.treatment_h))[septic]))
    return Trial(
        mortality=Effect(m.estimate, m.lower, m.upper, true_m, n),
        antibiotic_delay_h=Effect(delay.estimate, delay.lower, delay.upper, true_d, int(septic.sum())),
        shown=int(shown.sum()), silent=int((~shown).sum()),
    )  # fmt: skip
