"""The noise-free physiological state of patients at given times, from their baselines and three drivers:
septic deterioration ``d`` (0..~1.5), a non-septic infection's inflammation, and the epidemic's
respiratory load. Measurements (:mod:`kawa.apps.sepsis.sim`) add noise to this; SOFA for the ground
truth (:mod:`kawa.apps.sepsis.cohort`) reads it directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.physiology import inflammation

if TYPE_CHECKING:
    from kawa.apps.sepsis.cohort import Patients

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741


def oxygen_flow(spo2_on_air: F) -> F:
    """The flow (L/min) ward staff titrate to: none at >= 92.5 %, then 2, 4 and 6 L/min."""
    return np.select([spo2_on_air >= 92.5, spo2_on_air >= 89.0, spo2_on_air >= 86.0], [0.0, 2.0, 4.0], 6.0)


def latent_state(
    p: Patients, rows: I, t: F, d: F, epi_rr: F | None = None, epi_spo2: F | None = None
) -> dict[str, F]:
    """State of patients ``rows`` at times ``t`` with deterioration ``d``; ``epi_rr``/``epi_spo2``: the
    epidemic's breaths/min added and SpO2 points removed per row (None: no epidemic)."""
    inf = inflammation(t, np.where(p.septic_course[rows], np.nan, p.infection_h[rows]))
    z = p.frailty[rows]
    wr, wc = p.w_resp[rows], p.w_cv[rows]
    wl = 2.0 - wr - wc  # organ dysfunction the vitals do not show is seen in the labs
    load = 0.0 if epi_rr is None else epi_rr
    drop = 0.0 if epi_spo2 is None else epi_spo2
    hr = p.hr0[rows] + 38.0 * d + 10.0 * inf + 4.0 * np.sin(2 * np.pi * t / 24.0 + p.circadian_phase[rows])
    rr = p.rr0[rows] + 10.0 * wr * d + 2.0 * inf + load
    temp = p.temp0[rows] + p.fever_sign[rows] * 1.8 * d + 1.0 * inf
    sbp = p.sbp0[rows] - 40.0 * wc * d
    dbp = p.dbp0[rows] - 24.0 * wc * d
    spo2_air = p.spo20[rows] - 7.0 * wr * d - drop
    flow = oxygen_flow(spo2_air)
    spo2 = np.minimum(100.0, spo2_air + 1.2 * flow)
    gcs = 15.0 - 7.0 * np.maximum(0.0, d - 0.6) - np.maximum(0.0, 0.7 * z - 1.2)
    wbc_sign = np.where(p.leukopenic[rows], -0.45, 1.0)
    wbc = np.maximum(0.5, p.wbc0[rows] + wbc_sign * 9.0 * d + 3.0 * inf)
    lac = p.lac0[rows] + 3.0 * d**1.5
    cr = p.cr0[rows] * (1.0 + 1.4 * wl * d)
    bili = p.bili0[rows] * (1.0 + 2.5 * wl * d)
    plt = p.plt0[rows] * np.exp(-0.7 * wl * d)
    return {
        "hr": hr, "rr": rr, "temp": temp, "sbp": sbp, "dbp": dbp, "map": (sbp + 2.0 * dbp) / 3.0,
        "spo2": spo2, "o2_flow": flow, "gcs": np.clip(gcs, 3.0, 15.0), "wbc": wbc, "lac": lac, "cr": cr,
        "bili": bili, "plt": plt,
    }
