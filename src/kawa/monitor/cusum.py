"""The CUSUM kernel and its false-alarm calibration (pure numpy/scipy, no state, no I/O).

A one-sided CUSUM on increments ``x_t`` (a standardised value minus the allowance ``k``) is Page's recursion
``S_t = max(0, S_{t-1} + x_t)``; it alarms when ``S_t > h``. :func:`cusum_paths` evaluates it for a whole block of
records at once through its closed form (Lindley's): with ``C_t = x_1 + ... + x_t``,
``S_t = C_t - min(-S_0, min_{j<=t} C_j)`` - a cumulative sum and a running minimum, vectorised over records and
channels.

Calibration: for increments ``s - k`` with ``E[s] = 0``, ``Var[s] = 1`` under the reference, the expected run length
to a false alarm from ``S_0 = 0`` is Siegmund's corrected diffusion approximation

    ARL(h) = (exp(theta * b) - 1 - theta * b) / (theta * k),    b = h + 1.166,

where ``theta`` is the positive root of ``E[exp(theta * (s - k))] = 1`` - ``2k`` for normal scores, and computed
from the reference's bin probabilities for the binned scores. :func:`threshold` inverts it. The approximation is
checked against simulated run lengths in ``tests/monitor/test_sequential_detector.py``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq

from kawa.monitor.errors import MonitorError

FloatArray = npt.NDArray[np.float64]

OVERSHOOT = 1.166  # Siegmund's correction: 2 * 0.583, the expected overshoot of both boundaries (unit variance)


def cusum_paths(increments: FloatArray, start: FloatArray) -> FloatArray:
    """Page's CUSUM ``S_t = max(0, S_{t-1} + x_t)`` for every row ``t`` of ``increments`` (records x channels),
    from ``start`` (one value >= 0 per channel), in closed form. Keep blocks to a few thousand rows: the
    cumulative sum's rounding grows with the block."""
    c = np.cumsum(increments, axis=0)
    floor = np.minimum.accumulate(c, axis=0)
    np.minimum(floor, -start, out=floor)
    out: FloatArray = c - floor
    return out


def drift_exponent(scores: npt.ArrayLike, probs: npt.ArrayLike, k: float) -> float:
    """The positive root ``theta`` of ``sum_i p_i * exp(theta * (s_i - k)) = 1`` for a discrete score (``inf``
    when ``s_i <= k`` everywhere: the CUSUM can never grow, so it never alarms)."""
    s = np.asarray(scores, dtype=np.float64) - k
    p = np.asarray(probs, dtype=np.float64)
    keep = p > 0
    s, p = s[keep], p[keep]
    if s.max() <= 0:
        return math.inf
    if float(p @ s) >= 0:
        raise MonitorError(f"the allowance k={k} must exceed the score's mean under the reference; raise the shift")

    def log_mgf(theta: float) -> float:
        a = theta * s
        top = float(a.max())
        return top + math.log(float(p @ np.exp(a - top)))

    hi = 1.0
    while log_mgf(hi) <= 0:
        hi *= 2
    return float(brentq(log_mgf, 1e-12 * hi, hi, xtol=1e-12, rtol=1e-12))


def log_arl(h: float, k: float, theta: float) -> float:
    """Natural log of :func:`arl` (finite far beyond where the run length itself overflows)."""
    if math.isinf(theta):
        return math.inf
    b = theta * (h + OVERSHOOT)
    head = math.log(math.expm1(b) - b) if b < 30 else b + math.log1p(-(1 + b) * math.exp(-b))
    return head - math.log(theta * k)


def arl(h: float, k: float, theta: float) -> float:
    """Expected records to a false alarm of one one-sided CUSUM with allowance ``k`` and threshold ``h`` on a
    unit-variance score whose drift exponent is ``theta`` (``2k`` for normal scores)."""
    value = log_arl(h, k, theta)
    return math.exp(value) if value < 700 else math.inf


def threshold(target_arl: float, k: float, theta: float) -> float:
    """The threshold ``h >= 0`` at which one one-sided CUSUM runs ``target_arl`` records to a false alarm on
    average (``inf`` for a channel that can never alarm)."""
    if not target_arl > 1:
        raise MonitorError(f"a run length target must exceed 1 record, got {target_arl}")
    if not k > 0:
        raise MonitorError(f"the CUSUM allowance k must be positive (half the shift to detect), got {k}")
    if math.isinf(theta):
        return math.inf
    goal = math.log(target_arl)
    if log_arl(0.0, k, theta) >= goal:
        return 0.0

    def gap(h: float) -> float:
        return log_arl(h, k, theta) - goal

    hi = 1.0
    while gap(hi) < 0:
        hi *= 2
    return float(brentq(gap, 0.0, hi, xtol=1e-10))
