"""How close the simulator comes to the published baselines, measured on its own data.

The cohort is the Seymour et al. (JAMA 2016) one: patients with suspected infection; each score is the
maximum over the vital sets in [suspected infection - 48 h, + 24 h] (labs carried forward), against death
at discharge. Published: qSOFA >= 2 sensitivity 0.51 / specificity 0.83, SIRS >= 2 0.86 / 0.29, NEWS
AUROC about 0.86; prevalence of sepsis about 7 % of admissions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.care import outcomes, respond
from kawa.apps.sepsis.codes import Code
from kawa.apps.sepsis.cohort import make_patients
from kawa.apps.sepsis.features import last_values, set_ends
from kawa.apps.sepsis.scores import news2, qsofa, sirs
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.sim import Observations, Simulation, observations, window

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741

PUBLISHED = {"prevalence": 0.07, "qsofa_sens": 0.51, "qsofa_spec": 0.83, "sirs_sens": 0.86, "sirs_spec": 0.29,
             "news2_auroc": 0.86}


@dataclass(frozen=True)
class Calibration:
    prevalence: float
    cohort: int
    deaths: int
    qsofa_sens: float
    qsofa_spec: float
    sirs_sens: float
    sirs_spec: float
    news2_auroc: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def auroc(score: npt.ArrayLike, label: npt.ArrayLike) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count one half)."""
    from scipy.stats import rankdata

    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(label, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def scores_at(obs: Observations, rows: I) -> tuple[I, I, I]:
    """qSOFA, SIRS and NEWS2 right after each of ``rows`` (last values carried forward)."""
    lv = last_values(obs, rows)
    def col(c: Code) -> F:
        return lv[:, int(c)]

    q = qsofa(col(Code.RR), col(Code.SBP), col(Code.GCS), col(Code.ACVPU))
    s = sirs(col(Code.TEMP), col(Code.HR), col(Code.RR), col(Code.WBC))
    n = news2(col(Code.RR), col(Code.SPO2), np.nan_to_num(col(Code.O2_FLOW)), col(Code.SBP), col(Code.HR),
              col(Code.ACVPU), col(Code.TEMP))
    return q, s, n


def patient_max(patient: npt.NDArray[np.int32], keep: npt.NDArray[np.bool_], score: I, n: int) -> I:
    """Per patient, the maximum of ``score`` over the rows kept (-1 where none)."""
    out = np.full(n, -1, dtype=np.int64)
    np.maximum.at(out, patient[keep], score[keep])
    return out


def calibrate(sim: Simulation) -> Calibration:
    """The published figures, measured on ``sim`` (best a cohort-mode simulation: whole stays)."""
    p, o, obs = sim.patients, sim.outcomes, sim.observations
    rows = set_ends(obs)
    pat = obs.patient[rows]
    t = obs.time_h[rows]
    inf = p.infection_h[pat]
    keep = p.infected[pat] & (t >= inf - 48.0) & (t <= inf + 24.0)
    q, s, nw = scores_at(obs, rows)
    n = len(p)
    qm, sm, nm = (patient_max(pat, keep, x, n) for x in (q, s, nw))
    cohort = p.infected & (qm >= 0)
    died = o.died[cohort]
    alive = ~died

    def sens_spec(m: I) -> tuple[float, float]:
        pos = m[cohort] >= 2
        return float(pos[died].mean()), float((~pos[alive]).mean())

    qs, qp = sens_spec(qm)
    ss, sp = sens_spec(sm)
    return Calibration(
        prevalence=float(o.sepsis.mean()), cohort=int(cohort.sum()), deaths=int(died.sum()),
        qsofa_sens=qs, qsofa_spec=qp, sirs_sens=ss, sirs_spec=sp, news2_auroc=auroc(nm[cohort], died),
    )


def calibration_run(s: SimSettings) -> Calibration:
    """:func:`calibrate` on a cohort simulation of ``s``, observing only the patients the measures read
    (those with suspected infection) — the same numbers at a fraction of the cost."""
    s = s if s.mode == "cohort" else s.model_copy(update={"mode": "cohort"})
    p = make_patients(s)
    care = respond(p, s)
    t0, t1 = window(s, p)
    return calibrate(Simulation(s, p, care, outcomes(p, s, care), observations(p, s, care, t0, t1, p.infected)))
