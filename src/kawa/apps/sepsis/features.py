"""Per-patient features, streamed and in batch, with one definition.

For each code: the last value, its delta to the one before, hours since it was measured, the max, min and
mean over the window (now - ``WINDOW_H``, now], and how many of the patient's observation times so far
lacked it. "Now" is the time of the latest observation applied; a code never measured (or with nothing in
the window) gives NaN.

Streaming: a :class:`FeatureState` per patient, :func:`update` (pure: returns the next state) and
:func:`features`. Batch: :func:`batch_features` gives, for chosen rows of an observations table, the
features of that row's patient right after the row — the same floats (window sums are added newest first
on both sides, so even the means agree bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.codes import N_CODES, Code
from kawa.apps.sepsis.sim import Observation, Observations

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741

WINDOW_H = 6.0
STATS = ("last", "delta", "since_h", "max6h", "min6h", "mean6h", "missing")
NAMES: tuple[str, ...] = tuple(f"{c.name.lower()}_{s}" for c in Code for s in STATS)
"""Column names of a feature vector: code-major, then :data:`STATS`."""
N_STATS = len(STATS)
_NAN = float("nan")


@dataclass(frozen=True)
class CodeState:
    last_t: float = _NAN
    last: float = _NAN
    prev: float = _NAN
    count: int = 0
    window: tuple[tuple[float, float], ...] = ()


_EMPTY = CodeState()


@dataclass(frozen=True)
class FeatureState:
    """What one patient's features need from the past: per code, the last two values, the count and the
    values of the last ``WINDOW_H`` hours; and the patient's distinct observation times."""

    codes: tuple[CodeState, ...] = (_EMPTY,) * N_CODES
    times: int = 0
    now: float = _NAN


def update(state: FeatureState, obs: Observation) -> FeatureState:
    """The state after ``obs`` (observations of a patient must come in time order)."""
    t, v = obs.time_h, obs.value
    cs = state.codes[obs.code]
    window = (*(x for x in cs.window if x[0] > t - WINDOW_H), (t, v))
    new = CodeState(last_t=t, last=v, prev=cs.last, count=cs.count + 1, window=window)
    codes = (*state.codes[: obs.code], new, *state.codes[obs.code + 1 :])
    times = state.times + (0 if t == state.now else 1)
    return FeatureState(codes, times, t)


def update_rows(state: FeatureState, rows: Iterable[tuple[float, int, float]]) -> FeatureState:
    """The state after rows ``(time_h, code, value)`` in time order, as :func:`update` applied to each in turn,
    except that a row older than the state's latest observation is skipped (a patient's rows arrive in
    order; an older one is not applied). One new state for all of them."""
    codes = list(state.codes)
    times, now = state.times, state.now
    for t, code, v in rows:
        if now > t:
            continue
        c = int(code)
        cs = codes[c]
        cut = t - WINDOW_H
        codes[c] = CodeState(t, v, cs.last, cs.count + 1, (*(x for x in cs.window if x[0] > cut), (t, v)))
        if t != now:
            times += 1
        now = t
    return FeatureState(tuple(codes), times, now)


def features(state: FeatureState) -> tuple[float, ...]:
    """The feature vector (:data:`NAMES`) at the state's latest observation time."""
    now = state.now
    out: list[float] = []
    for cs in state.codes:
        inside = [v for (t, v) in cs.window if t > now - WINDOW_H]
        if inside:
            acc = 0.0
            for v in reversed(inside):
                acc += v
            wmax, wmin, wmean = max(inside), min(inside), acc / len(inside)
        else:
            wmax = wmin = wmean = _NAN
        out += [cs.last, cs.last - cs.prev, now - cs.last_t, wmax, wmin, wmean, float(state.times - cs.count)]
    return tuple(out)


def batch_features(obs: Observations, rows: I | None = None) -> F:
    """Features (``len(rows)`` x :data:`NAMES`) of each row's patient right after row ``rows[i]`` of
    ``obs`` (default: every row). ``obs`` must be in event-time order, as the simulator writes it."""
    n = len(obs)
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    perm = np.lexsort((np.arange(n), obs.patient))  # patient-major, time order within a patient
    where = np.empty(n, dtype=np.int64)
    where[perm] = np.arange(n)
    pat = obs.patient[perm]
    tim = obs.time_h[perm]
    cod = obs.code[perm]
    val = obs.value[perm]
    first = np.ones(n, dtype=bool)
    first[1:] = pat[1:] != pat[:-1]
    pstart = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    new_time = first.copy()
    new_time[1:] |= tim[1:] != tim[:-1]
    ntimes_all = np.cumsum(new_time)
    ntimes = ntimes_all - (ntimes_all[pstart] - 1)

    q = where[rows]  # the rows in patient-major positions
    tq = tim[q]
    ps = pstart[q]
    out = np.full((len(rows), N_CODES * N_STATS), np.nan)
    for c in range(N_CODES):
        isc = cod == c
        cpos = np.flatnonzero(isc)
        rank = np.cumsum(isc) - 1  # rank (in cpos) of the latest c-row at or before each position
        lastpos = np.maximum.accumulate(np.where(isc, np.arange(n), -1))[q]
        has = lastpos >= ps
        r = np.where(has, rank[q], 0)
        base = c * N_STATS
        if not has.any():
            out[:, base + 6] = ntimes[q]
            continue
        lp = np.where(has, lastpos, 0)
        last = np.where(has, val[lp], np.nan)
        prev_ok = has & (r >= 1) & (cpos[np.maximum(r - 1, 0)] >= ps)
        prev = np.where(prev_ok, val[cpos[np.maximum(r - 1, 0)]], np.nan)
        # count of c-rows of this patient so far: ranks from the patient's first c-row
        first_rank = np.searchsorted(cpos, ps)
        count = np.where(has, r - first_rank + 1, 0)
        out[:, base + 0] = last
        out[:, base + 1] = last - prev
        out[:, base + 2] = np.where(has, tq - tim[lp], np.nan)
        acc = np.zeros(len(rows))
        wmax = np.full(len(rows), -np.inf)
        wmin = np.full(len(rows), np.inf)
        cnt = np.zeros(len(rows), dtype=np.int64)
        alive = has.copy()
        j = 0
        while alive.any():
            rj = r - j
            ok = alive & (rj >= 0)
            pos = cpos[np.maximum(rj, 0)]
            ok &= (pos >= ps) & (tim[pos] > tq - WINDOW_H)
            vals = val[pos]
            acc = np.where(ok, acc + vals, acc)
            wmax = np.where(ok, np.maximum(wmax, vals), wmax)
            wmin = np.where(ok, np.minimum(wmin, vals), wmin)
            cnt += ok
            alive = ok
            j += 1
        some = cnt > 0
        out[:, base + 3] = np.where(some, wmax, np.nan)
        out[:, base + 4] = np.where(some, wmin, np.nan)
        out[:, base + 5] = np.where(some, acc / np.maximum(cnt, 1), np.nan)
        out[:, base + 6] = ntimes[q] - count
    return out


def column(name: str) -> int:
    """Index of a feature by name (e.g. ``"rr_last"``)."""
    return NAMES.index(name)


def set_ends(obs: Observations) -> I:
    """Rows that end a (patient, time) group: where a full vital set has been applied."""
    n = len(obs)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # groups are contiguous: the table is sorted by (time, patient, code)
    end = np.ones(n, dtype=bool)
    end[:-1] = (obs.patient[1:] != obs.patient[:-1]) | (obs.time_h[1:] != obs.time_h[:-1])
    return np.flatnonzero(end)


def last_values(obs: Observations, rows: I) -> F:
    """Only the last value of every code (``len(rows)`` x codes) right after each row — the cheap part of
    :func:`batch_features`, for scoring every vital set of a large table."""
    n = len(obs)
    perm = np.lexsort((np.arange(n), obs.patient))
    where = np.empty(n, dtype=np.int64)
    where[perm] = np.arange(n)
    pat = obs.patient[perm]
    cod = obs.code[perm]
    val = obs.value[perm]
    first = np.ones(n, dtype=bool)
    first[1:] = pat[1:] != pat[:-1]
    ps = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    q = where[np.asarray(rows, dtype=np.int64)]
    out = np.full((len(q), N_CODES), np.nan)
    for c in range(N_CODES):
        lastpos = np.maximum.accumulate(np.where(cod == c, np.arange(n), -1))[q]
        has = lastpos >= ps[q]
        out[:, c] = np.where(has, val[np.maximum(lastpos, 0)], np.nan)
    return out
