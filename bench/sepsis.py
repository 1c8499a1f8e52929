"""A simulated hospital day through the sepsis app, end to end: FHIR ingest → features → scores → alerts →
outcome join, with the clinical metrics of the model and the bedside baselines.

    .venv/bin/python bench/sepsis.py --patients 30000

Two runs, each on its own embedded platform (a fresh home) with a LightGBM score trained there on
``--train-patients`` simulated admissions (its alert threshold picked on the training patients: the highest
that keeps the sensitivity of NEWS2 >= 7, :func:`kawa.apps.sepsis.train.pick_threshold`):

1. **paced** (real-time mode): the first ``--paced-h`` simulated hours at ``--paced-speed`` times real time,
   each Bundle sent at its place in the block (the census's Bundles spread evenly, as a ward's interface
   engine sends them), so the pipeline is never behind: the observation → alert latency of each alert
   (``latency_ms``: from the Bundle's send time to the alert) gives ``alert_p99_ms``, and the same latency to
   the verdict of every Bundle (``latency_ms`` of each score event; an alert is emitted in that step)
   ``verdict_p99_ms``. The paced run alerts at ``--paced-threshold`` (default 0: every score is over it, and
   the suppression window and the hourly budget decide which alert): the trained threshold raises a handful
   of alerts a day at a small census, too few for a percentile, and an alert takes the same path at any
   threshold.
2. **day**: the whole day as fast as the pipeline takes it. A publisher process (the hospital's interface
   engine: not Kawa's work, but on the same two cores) writes one FHIR R4 Bundle per patient and
   ``--block-min`` block to the observations topic; ``day_wall_s`` runs from the first Bundle until every
   Bundle was scored or dead-lettered (``pipeline_cpu_ms_per_bundle``: the CPU of the platform's process over
   that time per Bundle; ``publisher_cpu_ms_per_bundle``: the publisher's). Then the day's outcomes
   (followed to discharge) are published and joined to the decision records by the monitor's
   :class:`~kawa.monitor.outcomes.OutcomeJoiner`.

Metrics, all from what the app wrote (the ``sepsis.scores`` topic read back), against the simulator's truth
(everything matured): the model's alerts are the pipeline's own verdicts; NEWS2 >= 7 and qSOFA >= 2 are
their scores on the same stream through the same alert policy. ``lead_time_h_median`` is the median gain
over shift-change screening (hours by which the first hit precedes the first screen that would have found
the patient); ``lead_before_onset_h_median`` the median lead before Sepsis-3 onset. The intention-to-treat
effect is the randomised silent arm's (:mod:`kawa.apps.sepsis.silent`): each patient's first alert shown or
withheld by a sticky assignment, mortality shown - silent with its always-valid interval; ``itt_true`` is the
simulator's exact effect.

The last line is JSON with the keys of the sepsis issue (patients, observations, day_wall_s,
realtime_factor, alert_p99_ms, ppv_model, ppv_news2, ppv_qsofa, sens_model, sens_news2, lead_time_h_median,
alerts_per_100_patient_days, utility_model, utility_news2, itt_effect, itt_true) and a few more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BUDGET_SHARE = 0.01  # alerts an hour the clinicians take: 1 % of the census (300 an hour at 30,000)


def _settings(a: argparse.Namespace, threshold: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "score_source": "model", "fhir_validate": a.fhir_validate, "block_min": a.block_min,
        "corrupt_fraction": a.corrupt, "budget_per_h": max(60, int(a.patients * BUDGET_SHARE)),
        "sim": {"patients": a.patients, "hours": a.hours, "seed": a.seed}, "history_admissions": 0,
    }  # fmt: skip
    if threshold is not None:
        out["model_threshold"] = threshold
    return out


def _platform(home: Path) -> Any:
    from kawa.config import load_config
    from kawa.platform import Platform

    config = load_config(None, env={}, home=str(home), portal={"enabled": False}, ml={"scheduler": False})
    return Platform(config)


def _ends(platform: Any, topic: str) -> int:
    return sum(p.end_offset for p in platform.log.describe_topic(topic).partitions)


def _start(
    platform: Any, a: argparse.Namespace, alert_at: float | None = None
) -> tuple[Any, float, dict[str, Any]]:
    """Train and promote the score on ``platform``, start the app (alerting at ``alert_at``, default the
    trained threshold); (settings, threshold, training result)."""
    from kawa.apps.plugin import declared
    from kawa.apps.runtime import start_app
    from kawa.apps.sepsis.plugin import plugin
    from kawa.apps.sepsis.train import train

    s = declared(plugin, _settings(a)).settings
    result = train(patients=a.train_patients, config=platform.config, settings=s, threshold=True)
    threshold = float(result["threshold"])
    section = _settings(a, threshold if alert_at is None else alert_at)
    start_app(platform, plugin, section)
    return declared(plugin, section).settings, threshold, result


def _publisher(home: Path, a: argparse.Namespace, speed: float | None, until_h: float) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--publish", str(home), "--patients", str(a.patients), "--hours", str(a.hours),
           "--seed", str(a.seed), "--block-min", str(a.block_min), "--corrupt", str(a.corrupt),
           "--until-h", str(until_h)]  # fmt: skip
    if speed is not None:
        cmd += ["--speed", str(speed)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def publish_main(a: argparse.Namespace) -> None:
    """The publisher process: the day's Bundles (no alert reaches the simulated clinicians: the silent-arm
    analysis needs the course without alerts), paced at ``--speed`` or as fast as the log takes them."""
    from kawa.apps.sepsis.app_settings import SepsisSettings
    from kawa.apps.sepsis.care import respond
    from kawa.apps.sepsis.cohort import make_patients
    from kawa.apps.sepsis.demo import Tally, publish_block
    from kawa.apps.sepsis.settings import SimSettings
    from kawa.apps.sepsis.sim import iter_blocks

    platform = _platform(Path(a.publish))
    s = SepsisSettings(sim=SimSettings(patients=a.patients, hours=a.hours, seed=a.seed), corrupt_fraction=a.corrupt)
    patients = make_patients(s.sim)
    aliases = _aliases(s, len(patients))
    block_h = a.block_min / 60.0
    tally = Tally()
    producer = platform.log.producer()
    rng = np.random.default_rng(a.seed + 1)
    began = time.monotonic()
    try:
        care = respond(patients, s.sim, None)
        for k, block in enumerate(iter_blocks(patients, s.sim, care, block_h, t1=min(a.hours, a.until_h))):
            start = began + k * block_h * 3600.0 / a.speed if a.speed else 0.0

            def pace(i: int, n: int, start: float = start) -> None:
                due = start + (i / n) * block_h * 3600.0 / a.speed
                while (wait := due - time.monotonic()) > 0:
                    time.sleep(min(wait, 0.05))  # pacing to the simulated clock, not a test's wait

            publish_block(producer, s, block, rng, tally, aliases, pace if a.speed else None)
            if k % 4 == 0:
                producer.flush()
        producer.flush()
    finally:
        producer.close()
        platform.stop()
    print(json.dumps({"messages": tally.messages, "observations": tally.observations, "damaged": tally.damaged}))


def _wait_done(platform: Any, s: Any, publisher: subprocess.Popen[str], label: str) -> dict[str, Any]:
    """Until the publisher ended and every Bundle it sent was scored or dead-lettered (a progress bar)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    sent: dict[str, Any] | None = None
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(label, total=None)
        while True:
            received = _ends(platform, s.observations_topic)
            done = _ends(platform, s.scores_topic) + _ends(platform, s.dead_letter_topic)
            if sent is None and publisher.poll() is not None:
                if publisher.returncode != 0:
                    raise SystemExit(f"the publisher failed with exit code {publisher.returncode}")
                sent = json.loads((publisher.stdout.read() if publisher.stdout else "").strip().splitlines()[-1])
            bar.update(task, completed=done, total=received if sent is None else sent["messages"])
            if sent is not None and done >= sent["messages"]:
                return sent
            time.sleep(0.2)  # a benchmark's poll interval: it waits on the counts above


def _paced(a: argparse.Namespace, home: Path) -> dict[str, Any]:
    from kawa.evaluation.experiments import read_to_end

    platform = _platform(home)
    try:
        s, _threshold, _ = _start(platform, a, a.paced_threshold)
        publisher = _publisher(home, a, a.paced_speed, a.paced_h)
        _wait_done(platform, s, publisher, f"paced ({a.paced_speed:g}x real time)")
        alerts = [float(json.loads(r.value or b"{}")["latency_ms"]) for r in read_to_end(platform.log, s.alerts_topic)]
        verdicts = [json.loads(r.value or b"{}").get("latency_ms") for r in read_to_end(platform.log, s.scores_topic)]
        every = [float(v) for v in verdicts if v is not None]
    finally:
        platform.stop()
    return {"alerts": len(alerts), "alert_p50_ms": _pct(alerts, 50), "alert_p99_ms": _pct(alerts, 99),
            "verdicts": len(every), "verdict_p50_ms": _pct(every, 50), "verdict_p99_ms": _pct(every, 99)}  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _day(a: argparse.Namespace, home: Path) -> dict[str, Any]:
    from kawa.apps.sepsis.care import outcomes, respond
    from kawa.apps.sepsis.outcomes import outcome_events, publish
    from kawa.apps.sepsis.settings import SimSettings
    from kawa.apps.sepsis.sim import simulate
    from kawa.evaluation.experiments import read_to_end

    platform = _platform(home)
    try:
        s, threshold, trained = _start(platform, a)
        print(f"model trained in {trained['seconds']} s (held-out hourly AUROC {trained['auroc_model']:.3f}, "
              f"NEWS2 {trained['auroc_news2']:.3f}); alert threshold {threshold:.4f}", flush=True)  # fmt: skip
        began, cpu0, child0 = time.perf_counter(), time.process_time(), _children_cpu()
        publisher = _publisher(home, a, None, a.hours)
        sent = _wait_done(platform, s, publisher, "the day")
        day_wall = time.perf_counter() - began
        publisher.wait()
        cpu, child = time.process_time() - cpu0, _children_cpu() - child0
        scored = [json.loads(r.value or b"{}") for r in read_to_end(platform.log, s.scores_topic)]
        alerts = _ends(platform, s.alerts_topic)
        dead = _ends(platform, s.dead_letter_topic)

        sim = simulate(SimSettings(patients=a.patients, hours=a.hours, seed=a.seed))
        aliases = _aliases(s, len(sim.patients))
        t = time.perf_counter()
        published = publish(platform.log, s.outcomes_topic,
                            outcome_events(outcomes(sim.patients, s.sim, respond(sim.patients, s.sim, None)),
                                           lambda ref: aliases[int(ref.rpartition("-")[2])]))  # fmt: skip
        joined = _join(platform, s)
        join_wall = time.perf_counter() - t
    finally:
        platform.stop()
    out = {
        "messages": sent["messages"], "observations": sent["observations"], "day_wall_s": round(day_wall, 1),
        "realtime_factor": round(a.hours * 3600.0 / day_wall, 1),
        "bundles_per_s": round(sent["messages"] / day_wall, 1),
        "observations_per_s": round(sent["observations"] / day_wall, 1),
        "pipeline_cpu_ms_per_bundle": round(cpu / sent["messages"] * 1000.0, 2),
        "publisher_cpu_ms_per_bundle": round(child / sent["messages"] * 1000.0, 2),
        "scored": len(scored), "dead_lettered": dead, "alerts_raised": alerts, "model_threshold": round(threshold, 4),
        "outcomes": published, "join_wall_s": round(join_wall, 2), **joined,
    }  # fmt: skip
    return out | _clinical(sim, s, scored, aliases)


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _aliases(s: Any, n: int) -> list[str]:
    from kawa.apps.sepsis.events import pseudonym
    from kawa.apps.sepsis.fhir import default_subject

    return [pseudonym(default_subject(i), s.key()) for i in range(n)]


def _join(platform: Any, s: Any) -> dict[str, Any]:
    """Join the outcomes to the decision records (by patient and window, everything matured)."""
    from kawa.monitor.join import JoinConfig
    from kawa.monitor.outcomes import OutcomeJoiner

    joiner = OutcomeJoiner(platform.log, JoinConfig(horizon=s.window_h * 3600.0, by="entity", grace=48 * 3600.0),
                           decisions=s.decisions_topic, outcomes=s.outcomes_topic).start()  # fmt: skip
    try:
        advance = joiner.step(watermark=math.inf)
        c = joiner.counts
    finally:
        joiner.close()
    positives = sum(1 for m in advance.matured if getattr(m, "label", 0) == 1)
    return {"decisions_joined": c.decisions, "matured": len(advance.matured), "matured_positive": positives,
            "outcomes_joined": c.joined}  # fmt: skip


def _clinical(sim: Any, s: Any, scored: list[dict[str, Any]], aliases: list[str]) -> dict[str, Any]:
    from kawa.apps.sepsis.alerts import AlertPolicy, run
    from kawa.apps.sepsis.fhir import EPOCH
    from kawa.apps.sepsis.metrics import Windows, clinical_metrics, cohort_of, normalised_utility
    from kawa.apps.sepsis.silent import arms_of, silent_arm_trial

    index = {p: i for i, p in enumerate(aliases)}
    rows = sorted(scored, key=lambda e: (e["time"], e["patient"]))
    pat = np.array([index[e["patient"]] for e in rows], dtype=np.int64)
    t = (np.array([e["time"] for e in rows]) - EPOCH.timestamp()) / 3600.0
    verdict = np.array([e["verdict"] for e in rows])
    score = np.array([e["score"] for e in rows])
    news2 = np.array([e["news2"] for e in rows])
    cohort, as_of = cohort_of(sim), float(np.max(sim.patients.discharge_h)) + 100.0
    w = Windows(s.window_h, s.grace_h)

    def rule(values: np.ndarray[Any, Any], threshold: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
        policy = AlertPolicy(threshold, s.suppress_h, s.budget_per_h)
        keyed = zip(pat.astype(str).tolist(), t.tolist(), values.astype(float).tolist(), strict=True)
        return np.array([v.alert for _p, _t, v in run(policy, keyed)], dtype=bool)

    alerted = {"model": np.isin(verdict, ("alert", "silent")),  # the pipeline's own verdicts
               "news2": rule(news2, s.threshold),
               "qsofa": rule(np.array([e["qsofa"] for e in rows]), 2.0)}  # fmt: skip
    predicted = {"model": score >= s.model_threshold, "news2": news2 >= s.threshold}
    out: dict[str, Any] = {}
    for name, hit in alerted.items():
        m = clinical_metrics(pat[hit], t[hit], cohort, as_of, w)
        out |= {f"ppv_{name}": _r(m.ppv), f"sens_{name}": _r(m.sensitivity), f"alerts_{name}": m.alerts,
                f"gain_vs_screen_h_{name}": _r(m.gain_vs_screen_h_median),
                f"lead_before_onset_h_{name}": _r(m.lead_time_h_median),
                f"alerts_per_100pd_{name}": _r(m.alerts_per_100_patient_days)}  # fmt: skip
    for name, pred in predicted.items():
        out[f"utility_{name}"] = _r(normalised_utility(pat, t, pred, sim.outcomes.onset_h))
    first = np.full(len(aliases), np.nan)
    model = alerted["model"]
    np.fmin.at(first, pat[model], t[model])
    trial = silent_arm_trial(sim, first, arms_of(aliases, "sepsis-silent-arm"))
    itt = trial.mortality
    out |= {"lead_time_h_median": out["gain_vs_screen_h_model"],
            "lead_before_onset_h_median": out["lead_before_onset_h_model"],
            "alerts_per_100_patient_days": out["alerts_per_100pd_model"],
            "itt_effect": _r(itt.estimate, 5), "itt_lower": _r(itt.lower, 5), "itt_upper": _r(itt.upper, 5),
            "itt_true": _r(itt.true, 5), "itt_covers": itt.covers}  # fmt: skip
    return out


def _r(x: float, digits: int = 4) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


def _threshold(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=30_000, help="the census of the day (default 30,000)")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--block-min", type=float, default=60.0, help="simulated minutes per Bundle and patient")
    ap.add_argument("--train-patients", type=int, default=1500, help="admissions the score is trained on")
    ap.add_argument("--paced-h", type=float, default=1.0, help="simulated hours of the paced run (0: none)")
    ap.add_argument("--paced-speed", type=float, default=60.0, help="times real time of the paced run")
    ap.add_argument("--paced-threshold", type=_threshold, default=0.0,
                    help="the paced run's alert threshold (default 0: every score is over it, suppression and the "
                         "budget still apply; an alert takes the same path at any threshold); 'none': the trained one")
    ap.add_argument("--corrupt", type=float, default=0.0, help="share of damaged Bundles")
    ap.add_argument("--fhir-validate", action="store_true", help="also validate with fhir.resources (slow)")
    ap.add_argument("--publish", help=argparse.SUPPRESS)  # the publisher process: the platform home
    ap.add_argument("--speed", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--until-h", type=float, default=math.inf, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.publish:
        publish_main(a)
        return
    import logging

    logging.getLogger("kawa").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kawa-sepsis-bench-") as tmp:
        paced = _paced(a, Path(tmp) / "paced" / ".kawa") if a.paced_h > 0 else {}
        day = _day(a, Path(tmp) / "day" / ".kawa")
    load = os.getloadavg()[0]
    result = {"patients": a.patients, **day, **{k: v for k, v in paced.items() if k not in ("alerts", "verdicts")},
              "paced_alerts": paced.get("alerts"), "paced_verdicts": paced.get("verdicts"),
              "paced_speed": a.paced_speed, "paced_threshold": a.paced_threshold, "block_min": a.block_min,
              "fhir_validate": a.fhir_validate, "load_avg": round(load, 1), "cores": os.cpu_count()}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
