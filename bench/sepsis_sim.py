"""The sepsis simulator's day: generate a census day, compute features and the three scores, and measure
the published baselines on a cohort of the same size.

    python bench/sepsis_sim.py --patients 30000

Steps, each timed: (1) :func:`~kawa.apps.sepsis.sim.simulate` a census of ``--patients`` monitored
over 24 h; (2) batch features at the end of each patient-hour (the hourly scoring points) plus qSOFA, SIRS
and NEWS2 at every vital set; (3) the streaming features, and the FHIR encoder and decoder (a Bundle
through JSON), over the first ``--stream-rows`` observations, for rates; (4)
:func:`~kawa.apps.sepsis.calibration.calibration_run` on a cohort of ``--patients`` admissions (prevalence,
qSOFA/SIRS sensitivity/specificity for death, NEWS2 AUROC). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    from kawa.apps.sepsis.calibration import calibration_run, scores_at
    from kawa.apps.sepsis.features import FeatureState, batch_features, features, set_ends, update
    from kawa.apps.sepsis.fhir import decode_bundle, encode_bundle
    from kawa.apps.sepsis.settings import SimSettings
    from kawa.apps.sepsis.sim import iter_observations, simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=30_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--stream-rows", type=int, default=100_000)
    a = ap.parse_args()

    s = SimSettings(patients=a.patients, hours=a.hours, seed=a.seed)
    t = time.perf_counter()
    sim = simulate(s)
    sim_wall = time.perf_counter() - t
    obs = sim.observations
    print(f"simulated {a.patients} patients, {len(obs)} observations in {sim_wall:.1f} s", flush=True)

    t = time.perf_counter()
    hour = np.floor(obs.time_h).astype(np.int64)
    key = obs.patient.astype(np.int64) * 100_000 + hour
    last_in_hour = _last_per_key(key)
    feats = batch_features(obs, last_in_hour)
    q, si, nw = scores_at(obs, set_ends(obs))
    features_wall = time.perf_counter() - t
    print(f"features at {len(last_in_hour)} patient-hours ({feats.shape[1]} each) and scores at "
          f"{len(q)} vital sets in {features_wall:.1f} s", flush=True)

    t = time.perf_counter()
    states: dict[int, FeatureState] = {}
    n = 0
    for o in iter_observations(obs.take(np.arange(min(a.stream_rows, len(obs))))):
        st = update(states.get(o.patient, FeatureState()), o)
        states[o.patient] = st
        features(st)
        n += 1
    stream_rate = n / (time.perf_counter() - t)

    sample = list(iter_observations(obs.take(np.arange(min(a.stream_rows, len(obs))))))
    t = time.perf_counter()
    wire = json.dumps(encode_bundle(sample))
    enc_rate = len(sample) / (time.perf_counter() - t)
    t = time.perf_counter()
    back, bad = decode_bundle(json.loads(wire))
    dec_rate = len(sample) / (time.perf_counter() - t)
    assert back == sample and not bad, "FHIR round trip changed the observations"

    t = time.perf_counter()
    cal = calibration_run(SimSettings(patients=a.patients, mode="cohort", hours=48.0, seed=a.seed))
    cal_wall = time.perf_counter() - t
    out = {
        "patients": a.patients,
        "observations": len(obs),
        "sim_wall_s": round(sim_wall, 2),
        "features_wall_s": round(features_wall, 2),
        "stream_features_obs_per_s": round(stream_rate),
        "fhir_encode_obs_per_s": round(enc_rate),
        "fhir_decode_obs_per_s": round(dec_rate),
        "calibration_wall_s": round(cal_wall, 2),
        "cohort": cal.cohort,
        "deaths": cal.deaths,
        "prevalence": round(cal.prevalence, 4),
        "qsofa_sens": round(cal.qsofa_sens, 3),
        "qsofa_spec": round(cal.qsofa_spec, 3),
        "sirs_sens": round(cal.sirs_sens, 3),
        "sirs_spec": round(cal.sirs_spec, 3),
        "news2_auroc": round(cal.news2_auroc, 3),
        "news2_mean": round(float(np.mean(nw)), 2),
        "qsofa_ge2_share": round(float(np.mean(q >= 2)), 4),
        "sirs_ge2_share": round(float(np.mean(si >= 2)), 4),
    }
    print(json.dumps(out))


def _last_per_key(key: np.ndarray) -> np.ndarray:
    """The last row (in table order) of each key value."""
    order = np.lexsort((np.arange(len(key)), key))
    k = key[order]
    ends = np.r_[k[1:] != k[:-1], True]
    return np.sort(order[ends])


if __name__ == "__main__":
    main()
