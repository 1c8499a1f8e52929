"""qSOFA, SIRS and NEWS2, exactly per their published thresholds, vectorised over numpy arrays.

Every function takes one value per observation time (arrays of the same shape; NaN means "not measured")
and returns integer points. Values are first put at the resolution the charts are written in — HR, RR,
SBP and SpO2 whole numbers, temperature and WBC one decimal — rounding half up, so a boundary on the chart
is a boundary here (a temperature of 38.04 is charted 38.0). A missing value scores no points, as a chart
without that row would.

- qSOFA (Seymour et al., JAMA 2016): RR >= 22/min, SBP <= 100 mmHg, altered mentation (GCS < 15, or ACVPU
  other than Alert); one point each.
- SIRS (ACCP/SCCM 1992): temperature > 38.0 or < 36.0 °C, HR > 90/min, RR > 20/min, WBC > 12 or < 4 x10⁹/L;
  one point each (PaCO2 and band forms are not simulated).
- NEWS2 (Royal College of Physicians, 2017 chart): the parameter table below, SpO2 scale 1 (scale 2 for
  patients with hypercapnic respiratory failure, when asked), +2 for any supplemental oxygen, and 3 for
  new confusion, voice, pain or unresponsive.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Points = npt.NDArray[np.int64]


def charted(x: npt.ArrayLike, decimals: int = 0) -> Array:
    """``x`` at the chart's resolution, rounding half up (NaN stays NaN)."""
    a = np.asarray(x, dtype=np.float64)
    scale = 10.0**decimals
    return np.floor(a * scale + 0.5 + 1e-9) / scale


def _band(x: Array, upper_edges: tuple[float, ...], points: tuple[int, ...]) -> Points:
    """Points of the first band whose (inclusive) upper edge ``x`` does not exceed; last band above all."""
    out = np.full(x.shape, points[-1], dtype=np.int64)
    done = np.zeros(x.shape, dtype=bool)
    for edge, p in zip(upper_edges, points[:-1], strict=True):
        here = ~done & (x <= edge)
        out[here] = p
        done |= here
    out[np.isnan(x)] = 0
    return out


def news2_rr(rr: npt.ArrayLike) -> Points:
    """RR: <=8 → 3, 9-11 → 1, 12-20 → 0, 21-24 → 2, >=25 → 3."""
    return _band(charted(rr), (8, 11, 20, 24), (3, 1, 0, 2, 3))


def news2_spo2_scale1(spo2: npt.ArrayLike) -> Points:
    """SpO2 scale 1: <=91 → 3, 92-93 → 2, 94-95 → 1, >=96 → 0."""
    return _band(charted(spo2), (91, 93, 95), (3, 2, 1, 0))


def news2_spo2_scale2(spo2: npt.ArrayLike, on_oxygen: npt.ArrayLike) -> Points:
    """SpO2 scale 2 (target 88-92 %): <=83 → 3, 84-85 → 2, 86-87 → 1, 88-92 → 0, >=93 on air → 0;
    on oxygen 93-94 → 1, 95-96 → 2, >=97 → 3."""
    s = charted(spo2)
    o2 = np.asarray(on_oxygen, dtype=bool)
    low = _band(s, (83, 85, 87), (3, 2, 1, 0))
    high = np.where(o2, _band(s, (92, 94, 96), (0, 1, 2, 3)), 0)
    return np.where(s <= 87, low, high).astype(np.int64) * ~np.isnan(s)


def news2_oxygen(o2_flow: npt.ArrayLike) -> Points:
    """Air → 0, any supplemental oxygen (flow > 0) → 2."""
    f = np.asarray(o2_flow, dtype=np.float64)
    return np.where(f > 0, 2, 0).astype(np.int64)


def news2_sbp(sbp: npt.ArrayLike) -> Points:
    """SBP: <=90 → 3, 91-100 → 2, 101-110 → 1, 111-219 → 0, >=220 → 3."""
    return _band(charted(sbp), (90, 100, 110, 219), (3, 2, 1, 0, 3))


def news2_pulse(hr: npt.ArrayLike) -> Points:
    """Pulse: <=40 → 3, 41-50 → 1, 51-90 → 0, 91-110 → 1, 111-130 → 2, >=131 → 3."""
    return _band(charted(hr), (40, 50, 90, 110, 130), (3, 1, 0, 1, 2, 3))


def news2_consciousness(acvpu: npt.ArrayLike) -> Points:
    """Alert → 0; new Confusion, Voice, Pain, Unresponsive (ACVPU >= 1) → 3."""
    a = np.asarray(acvpu, dtype=np.float64)
    return np.where(a >= 1, 3, 0).astype(np.int64)


def news2_temperature(temp: npt.ArrayLike) -> Points:
    """Temperature: <=35.0 → 3, 35.1-36.0 → 1, 36.1-38.0 → 0, 38.1-39.0 → 1, >=39.1 → 2."""
    return _band(charted(temp, 1), (35.0, 36.0, 38.0, 39.0), (3, 1, 0, 1, 2))


def news2(
    rr: npt.ArrayLike,
    spo2: npt.ArrayLike,
    o2_flow: npt.ArrayLike,
    sbp: npt.ArrayLike,
    hr: npt.ArrayLike,
    acvpu: npt.ArrayLike,
    temp: npt.ArrayLike,
    *,
    scale2: npt.ArrayLike | bool = False,
) -> Points:
    """The NEWS2 aggregate (0-20). ``scale2``: per observation (or for all), use SpO2 scale 2."""
    s2 = np.broadcast_to(np.asarray(scale2, dtype=bool), np.shape(np.asarray(rr)))
    sat = np.where(s2, news2_spo2_scale2(spo2, np.asarray(o2_flow, dtype=np.float64) > 0), news2_spo2_scale1(spo2))
    return (
        news2_rr(rr)
        + sat
        + news2_oxygen(o2_flow)
        + news2_sbp(sbp)
        + news2_pulse(hr)
        + news2_consciousness(acvpu)
        + news2_temperature(temp)
    )


def qsofa(rr: npt.ArrayLike, sbp: npt.ArrayLike, gcs: npt.ArrayLike, acvpu: npt.ArrayLike | None = None) -> Points:
    """qSOFA (0-3): RR >= 22, SBP <= 100, altered mentation (GCS < 15 or, when given, ACVPU not Alert)."""
    r = charted(rr)
    s = charted(sbp)
    g = charted(gcs)
    altered = g < 15
    if acvpu is not None:
        altered |= np.asarray(acvpu, dtype=np.float64) >= 1
    return (r >= 22).astype(np.int64) + (s <= 100).astype(np.int64) + altered.astype(np.int64)


def sirs(temp: npt.ArrayLike, hr: npt.ArrayLike, rr: npt.ArrayLike, wbc: npt.ArrayLike) -> Points:
    """SIRS criteria met (0-4): temp > 38.0 or < 36.0, HR > 90, RR > 20, WBC > 12 or < 4 (x10⁹/L)."""
    t = charted(temp, 1)
    w = charted(wbc, 1)
    return (
        ((t > 38.0) | (t < 36.0)).astype(np.int64)
        + (charted(hr) > 90).astype(np.int64)
        + (charted(rr) > 20).astype(np.int64)
        + ((w > 12.0) | (w < 4.0)).astype(np.int64)
    )
