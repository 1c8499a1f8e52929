"""How fast can any detector see a 0.5 sd shift at <= 1 false alarm per 10^6 records? The oracle CUSUM of
``bench/monitor.py`` (issue 13's delay goal), and the same CUSUMs without the oracle's knowledge.

The **oracle** knows the shifted feature, the direction (up) and the size (0.5 sd): one one-sided CUSUM on that
feature, ``S = max(0, S + x - k)`` with ``k = 0.25``, alarming above ``h``. By Moustakides (1986) it is optimal in
Lorden's sense: no detector with an in-control ARL of at least ``gamma`` has a smaller worst-case expected delay,
and the CUSUM's worst case is its delay from ``S = 0``. Its ARL and that delay are computed *exactly* (to
quadrature error) from the CUSUM's Fredholm integral equation with Gauss-Legendre nodes, not from an
approximation, and ``h`` is solved for ARL = 10^6 records (1 false alarm per 10^6; the oracle watches one feature,
so its false alarms are those of the 20-feature record stream). The bench then measures it on the same seeded
tails as the other detectors (median delay), on many more simulated changes, and its false-alarm rate on a long
stationary stream.

Lorden's asymptotic lower bound ``ln(ARL) / I`` with ``I = delta^2 / 2`` nats per record (0.125 at 0.5 sd) is
printed beside it; it is first order only (the exact worst-case delay is below it at this ARL).

Without the oracle's knowledge, the same CUSUMs run on every feature (``any_feature_up``: 20 one-sided; and
``any_feature_two_sided``: 40, Kawa's mean mode), each tuned exactly so that all of them together raise 1 false
alarm per 10^6 records; their median delays, simulated, tell what not knowing the feature (and the direction)
costs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from kawa.monitor import cusum
from kawa.monitor.sequential import SequentialAlert, SequentialDetector, SequentialState

SHIFT = 0.5
K = SHIFT / 2
INFO = SHIFT**2 / 2  # Kullback-Leibler information per record, nats


def zero_start_arl(h: float, k: float, mu: float = 0.0, nodes: int = 200) -> float:
    """Expected records to the first alarm of ``S = max(0, S + x - k)``, ``x ~ N(mu, 1)``, from ``S = 0``: the
    solution of ``L(s) = 1 + L(0) Phi(k - mu - s) + int_0^h L(y) phi(y - s + k - mu) dy`` at ``s = 0``."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    y, w = (x + 1) * h / 2, w * h / 2
    at = np.concatenate([[0.0], y])
    a = np.eye(nodes + 1)
    a[:, 0] -= norm.cdf(k - mu - at)
    a[:, 1:] -= w[None, :] * norm.pdf(y[None, :] - at[:, None] + k - mu)
    return float(np.linalg.solve(a, np.ones(nodes + 1))[0])


def exact_threshold(arl: float, k: float = K) -> float:
    """The ``h`` whose in-control ARL is ``arl`` records (bracketed around Siegmund's approximation)."""
    guess = cusum.threshold(arl, k, 2 * k)
    return float(brentq(lambda h: math.log(zero_start_arl(h, k)) - math.log(arl), 0.5 * guess, 2 * guess + 5))


def one_sided(h: float, arl0: float) -> SequentialDetector:
    """Kawa's CUSUM code with one upward channel on one standardised feature (the downward one never alarms)."""
    return SequentialDetector(
        features=("x",), mode="mean", shift=SHIFT, arl0=arl0, channel_feature=(0,), channel_kind=("mean",),
        k=(K,), h=(h, math.inf), center=(0.0,), scale=(1.0,), clear_after=1, reference_version="oracle",
    )  # fmt: skip


def first_alarm(det: SequentialDetector, prefix: np.ndarray, tail: np.ndarray) -> float:  # type: ignore[type-arg]
    state, _ = det.step(SequentialState(), prefix[:, None])
    start = state.records
    _, events = det.step(state, tail[:, None])
    found = [e.record - start for e in events if isinstance(e, SequentialAlert)]
    return float(found[0]) if found else math.inf


def false_alarms_per_1e6(det: SequentialDetector, records: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    state = SequentialState()
    for lo in range(0, records, 1_000_000):
        state, _ = det.step(state, rng.normal(size=(min(1_000_000, records - lo), 1)))
    return state.crossings / records * 1e6


def race(h: float, features: int, two_sided: bool, runs: int, seed: int, warm: int = 1000,
         horizon: int = 1500) -> np.ndarray:  # type: ignore[type-arg]  # fmt: skip
    """Delays (records from the shift to the first crossing of any CUSUM) of ``runs`` simulated changes: one
    CUSUM per feature (and direction), started from their state after ``warm`` stationary records, feature 0
    shifted up by 0.5 sd. ``inf`` beyond ``horizon``."""
    rng = np.random.default_rng(seed)
    out = np.empty(runs)
    chunk = max(1, 4_000_000 // ((warm + horizon) * features * (2 if two_sided else 1)))
    for lo in range(0, runs, chunk):
        n = min(chunk, runs - lo)
        x = rng.normal(size=(warm + horizon, n, features))
        x[warm:, :, 0] += SHIFT
        inc = np.concatenate([x - K, -x - K], axis=2) if two_sided else x - K
        inc = inc.reshape(warm + horizon, -1)
        s0 = cusum.cusum_paths(inc[:warm], np.zeros(inc.shape[1]))[-1]
        s0 = np.where(s0 > h, 0.0, s0)  # a false alarm while warming (rare): restarted
        over = (cusum.cusum_paths(inc[warm:], s0) > h).reshape(horizon, n, -1).any(axis=2)
        out[lo : lo + n] = np.where(over.any(axis=0), over.argmax(axis=0) + 1.0, math.inf)
    return out


def oracle(prefixes: list[np.ndarray], tails: list[np.ndarray], adwin_rate: float, *, runs: int,  # type: ignore[type-arg]
           stationary: int) -> dict[str, Any]:  # fmt: skip
    """The oracle's numbers: ``prefixes[i]`` / ``tails[i]`` are seed ``i``'s stationary records and 0.5 sd
    tail of the shifted feature; ``adwin_rate`` is ADWIN's measured false alarms per 10^6 records."""
    arl = 1e6
    h = exact_threshold(arl)
    det = one_sided(h, arl)
    seeds = [first_alarm(det, p, t) for p, t in zip(prefixes, tails, strict=True)]
    sim = race(h, 1, False, runs, seed=101)
    out: dict[str, Any] = {
        "oracle_cusum_threshold": round(h, 3),
        "oracle_cusum_arl_records": round(zero_start_arl(h, K)),
        "oracle_cusum_false_alarms_per_1e6": round(false_alarms_per_1e6(det, stationary, seed=102), 3),
        "oracle_cusum_false_alarm_records": stationary,
        "oracle_cusum_delay_05sigma": float(np.median(seeds)),
        "oracle_cusum_delay_05sigma_simulated": float(np.median(sim)),
        "oracle_cusum_simulated_changes": runs,
        "oracle_cusum_mean_delay_05sigma_simulated": round(float(np.mean(sim)), 1),
        "oracle_cusum_worst_case_delay_05sigma": round(zero_start_arl(h, K, SHIFT), 1),
        "lorden_bound_05sigma": round(math.log(arl) / INFO, 1),
    }
    rate = adwin_rate if adwin_rate > 0 else 13.0  # ADWIN's rate in the reference run, when none was measured
    h_adwin = exact_threshold(1e6 / rate)
    out.update(
        oracle_at_adwin_rate_false_alarms_per_1e6=round(rate, 3),
        oracle_cusum_delay_05sigma_at_adwin_rate=float(np.median(race(h_adwin, 1, False, runs, seed=103))),
        oracle_cusum_worst_case_delay_05sigma_at_adwin_rate=round(zero_start_arl(h_adwin, K, SHIFT), 1),
        lorden_bound_05sigma_at_adwin_rate=round(math.log(1e6 / rate) / INFO, 1),
    )
    few = max(200, runs // 4)  # 20 or 40 CUSUMs per change: fewer changes
    for name, channels, two in (("any_feature_up", 20, False), ("any_feature_two_sided", 40, True)):
        hc = exact_threshold(channels * arl)
        delays = race(hc, 20, two, few, seed=104)
        out[f"cusum_{name}_threshold"] = round(hc, 3)
        out[f"cusum_{name}_delay_05sigma_simulated"] = float(np.median(delays))
    return out
