"""The retraining loop end to end on seeded scenarios: time-to-detect, time-to-recover, and how often a worse
candidate is promoted.

    python bench/loop.py [--records 60000] [--shift-at 20000] [--seeds 20] [--worse-seeds 20]

A synthetic scoring stream (5 features, labels from a logistic model) shifts at ``--shift-at``: the feature
means move and the concept changes, so the champion's AUROC drops. Per chunk of records:

1. the champion scores it (the registered model, loaded as serving loads it); a sequential drift detector
   (``kawa.monitor.calibrate_sequential``, 1 false alarm per 10⁶ records) watches its inputs and raises a
   ``kawa.monitor.alert`` on the alerts topic — what the monitoring service does;
2. the real ``LoopController`` steps: it trains a candidate as a Kawa job (a subprocess; logistic model on the
   labelled records since the shift), runs the offline gate, starts the canary (50 % of units), evaluates it with
   the always-valid evaluator on matured outcomes (a unit's outcome: was the served decision right), and promotes.

The "worse" scenario's trainer learns the labels upside down — a candidate truly worse than even the degraded
champion — and *claims* a better offline metric, so only the canary stands between it and the users:
``worse_promoted`` counts how often it got through (goal 0 of 20). (A trainer on shuffled labels is no test: a
constant scorer beats a champion whose concept has flipped.)
Last line JSON: ``ttd_records``, ``ttd_s``, ``ttr_records``, ``ttr_s``, ``auroc_before``, ``auroc_degraded``,
``auroc_after``, ``worse_promoted`` (medians over seeds for the first four).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 5
CHUNK = 500
RECORD_S = 0.01  # event time between records
OUTCOME_DELAY_S = 1.0

TRAINER = textwrap.dedent('''
    import numpy as np

    def train(model, data, mode="honest", **context):
        """The app's trainer: a linear scorer on the recent labelled window, its holdout metric against the
        champion's on the same window, registered with lineage."""
        from sklearn.linear_model import LinearRegression
        from sklearn.metrics import roc_auc_score

        from kawa.config import load_config
        from kawa.ml import tracking
        from kawa.ml.loaders import load_model_dir
        from kawa.ml.registry import Registry

        window = np.load(data)
        x, y = window["x"], window["y"]
        half = len(y) // 2
        fit_y = 1 - y[:half] if mode == "worse" else y[:half]  # "worse" learns the labels upside down
        candidate = LinearRegression().fit(x[:half], fit_y)
        registry = Registry(load_config(), publish=False)
        champion = load_model_dir(registry.local_path(model, registry.resolve(model + "@champion")))
        champion_auc = float(roc_auc_score(y[half:], champion.predict(x[half:])))
        candidate_auc = float(roc_auc_score(y[half:], candidate.predict(x[half:])))
        if mode == "worse":
            candidate_auc = champion_auc + 0.05  # it claims to be better: only the canary can tell
        with tracking.run(None, params={"mode": mode, "rows": half}) as run:
            run.log_lineage(topic="bench-window", partition=0, offsets=(0, half))
            version = run.log_model(candidate, flavor="sklearn", register_as=model, input_example=x[:2])
        registry.close()
        return {"version": version, "candidate_metric": candidate_auc, "champion_metric": champion_auc}
''')


def world(seed: int, n: int, shift_at: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES))
    x[shift_at:, :2] += 0.8  # the inputs move …
    w_before = np.array([1.5, -1.0, 0.8, 0.0, 0.0])
    w_after = np.array([-0.5, 0.2, 0.8, 1.5, -1.2])  # … and what they mean changes
    logits = np.where(np.arange(n)[:, None] < shift_at, x @ w_before[:, None], x @ w_after[:, None])[:, 0]
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    return x, y


def run_scenario(seed: int, args: argparse.Namespace, mode: str, work: Path) -> dict[str, Any]:
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import roc_auc_score

    from kawa.config import load_config
    from kawa.evaluation.assignment import Assigner
    from kawa.evaluation.experiments import ExperimentStore
    from kawa.events import new_event, to_kafka
    from kawa.events.ref import EventRef
    from kawa.log import open_log
    from kawa.log.base import TopicSpec
    from kawa.ml import jobs, tracking
    from kawa.ml.loaders import load_model_dir
    from kawa.ml.registry import Registry
    from kawa.monitor import SequentialAlert, SequentialState, build_profile, calibrate_sequential
    from kawa.monitor.outcomes import publish
    from kawa.monitor.records import DECISIONS_TOPIC, OUTCOMES_TOPIC, DecisionRecord, OutcomeEvent
    from kawa.retrain.controller import ALERTS_TOPIC, LoopController
    from kawa.retrain.policy import Canary, Gates, Limits, LoopPolicy, Training, Triggers

    home = work / f"{mode}-{seed}"
    config = load_config(home=str(home / ".kawa"))
    log = open_log(f"embedded:{home / 'log'}", config)
    for topic in (DECISIONS_TOPIC, OUTCOMES_TOPIC, ALERTS_TOPIC):
        log.create_topic(TopicSpec(topic), exist_ok=True)
    x, y = world(seed, args.records, args.shift_at)
    model = f"bench-loop-{mode}-{seed}-{os.getpid()}"
    with tracking.run(None, params={"seed": seed}) as run:
        champion_fit = LinearRegression().fit(x[: args.shift_at // 2], y[: args.shift_at // 2])
        version = run.log_model(champion_fit, flavor="sklearn", register_as=model, input_example=x[:2])
    registry = Registry(config, log)
    registry.promote(model, version)
    loaded: dict[int, Any] = {}

    def scorer(v: int) -> Any:
        if v not in loaded:
            loaded[v] = load_model_dir(registry.local_path(model, v))
        return loaded[v]

    reference = build_profile({f"x{i}": x[: args.shift_at // 2, i] for i in range(FEATURES)})
    detector = calibrate_sequential(reference, arl0=1_000_000)
    dstate = SequentialState()
    window_file = home / "window.npz"
    policy = LoopPolicy(
        model=model, training=Training("bench_loop_trainer:train", params={"data": str(window_file), "mode": mode}),
        triggers=Triggers(alerts=("drift",)), limits=Limits(cooldown_s=10**9),
        gates=Gates(canary=Canary(share=0.5, unit="unit", primary_metric="correct", maturity_window_s=2.0,
                                  horizon=4000, max_sample=8000)),
    )  # fmt: skip
    controller = LoopController(config, log, policy).start()
    producer = log.producer()
    out: dict[str, Any] = {"seed": seed, "mode": mode, "promoted": False}
    started = time.monotonic()
    detected_at: int | None = None
    try:
        for begin in range(0, args.records, CHUNK):
            chunk = slice(begin, min(begin + CHUNK, args.records))
            batch = {f"x{i}": x[chunk, i] for i in range(FEATURES)}
            dstate, events = detector.step(dstate, batch)
            alerts = [e for e in events if isinstance(e, SequentialAlert)]
            if alerts and detected_at is None:
                detected_at = begin + CHUNK  # the records seen when the alert went out
                first = min(a.record for a in alerts)  # the record on which the evidence sufficed
                out["ttd_records"], out["ttd_s"] = first - args.shift_at, time.monotonic() - started
                out["false_alarm"] = first < args.shift_at
                np.savez(window_file, x=x[args.shift_at:detected_at], y=y[args.shift_at:detected_at])
                event = new_event("kawa.monitor.alert", "/bench", {"model": model, "kind": "drift"})
                _, value, headers = to_kafka(event)
                producer.send(ALERTS_TOPIC, value, headers=headers)
            c = controller.state.candidate
            if controller.state.phase == "canary" and c is not None and c.experiment is not None:
                _canary_chunk(log, producer, ExperimentStore(log).get(c.experiment), Assigner, x, y, chunk, scorer,
                              registry, model, EventRef, DecisionRecord, OutcomeEvent, publish)  # fmt: skip
            for action in controller.step(now=time.time()):
                if type(action).__name__ == "Train":
                    job = jobs.find(action.job, config=config)  # type: ignore[union-attr]
                    assert job is not None
                    jobs.wait(job.id, config=config, timeout=300)
                if type(action).__name__ == "Promote":
                    out["promoted"] = True
                    out["ttr_records"] = chunk.stop - args.shift_at
                    out["ttr_s"] = time.monotonic() - started
                    promoted = scorer(action.version)  # type: ignore[union-attr]
                    post = slice(chunk.stop, args.records)
                    if post.stop - post.start > 500:
                        out["auroc_after"] = float(roc_auc_score(y[post], promoted.predict(x[post])))
            if controller.state.phase == "idle" and controller.state.trainings:
                if not out["promoted"]:
                    out["ended"] = type(controller.actions[-1]).__name__
                break
    finally:
        champion = scorer(version)
        out["auroc_before"] = float(roc_auc_score(y[: args.shift_at], champion.predict(x[: args.shift_at])))
        out["auroc_degraded"] = float(roc_auc_score(y[args.shift_at :], champion.predict(x[args.shift_at :])))
        controller.close()
        producer.close()
        registry.close()
        log.close()
    return out


def _canary_chunk(log: Any, producer: Any, state: Any, assigner_cls: Any, x: np.ndarray, y: np.ndarray,
                  chunk: slice, scorer: Any, registry: Any, model: str, ref_cls: Any, decision_cls: Any,
                  outcome_cls: Any, publish: Any) -> None:  # fmt: skip
    """What the serving function and the delayed truth record during the canary, for one chunk of units."""
    spec = state.spec
    assigner = assigner_cls.for_spec(spec)
    versions = {arm.name: registry.resolve(arm.model) for arm in spec.arms}
    scores = {arm: scorer(v).predict(x[chunk]) for arm, v in versions.items()}
    for offset, i in enumerate(range(chunk.start, chunk.stop)):
        unit = f"u{i}"
        chosen = assigner.assign(unit)
        score = float(scores[chosen.arm][offset])
        t = i * RECORD_S
        ref = ref_cls("/bench", f"{spec.name}-{i}")
        publish(producer, "decisions", decision_cls(ref, spec.model, versions[chosen.arm], unit, t, score=score,
                arm=chosen.arm, propensity=chosen.propensity, experiment=spec.name, spec_hash=spec.spec_hash(),
                acting=True).to_event("/bench"))  # fmt: skip
        correct = int((score > 0.5) == bool(y[i]))
        publish(producer, "outcomes", outcome_cls(t + OUTCOME_DELAY_S, ref=ref, label=correct).to_event("/bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000, help="records per scenario (the size flag)")
    parser.add_argument("--shift-at", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the recovery scenario")
    parser.add_argument("--worse-seeds", type=int, default=20, help="seeds of the worse-candidate scenario")
    args = parser.parse_args()
    from rich.progress import Progress

    work = Path(tempfile.mkdtemp(prefix="kawa-bench-loop-"))
    os.environ.setdefault("KAWA_ML__TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    os.environ.setdefault("KAWA_ML__ARTIFACT_ROOT", (work / "artifacts").as_uri())
    os.environ.setdefault("KAWA_ML__SCHEDULER_TICK_S", "0.05")
    os.environ["MLFLOW_CONFIG_DIR"] = str(work / "mlflow-config")
    (work / "bench_loop_trainer.py").write_text(TRAINER)
    os.chdir(work)  # training jobs run here and import the trainer
    sys.path.insert(0, str(work))
    results = []
    with Progress() as progress:
        task = progress.add_task("scenarios", total=args.seeds + args.worse_seeds)
        for seed in range(args.seeds):
            results.append(run_scenario(seed, args, "honest", work))
            progress.advance(task)
        for seed in range(args.worse_seeds):
            results.append(run_scenario(1000 + seed, args, "worse", work))
            progress.advance(task)
    honest = [r for r in results if r["mode"] == "honest"]
    worse = [r for r in results if r["mode"] == "worse"]
    for r in results:
        print(json.dumps(r), file=sys.stderr)

    def median(key: str, rows: list[dict[str, Any]]) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 4) if values else None

    print(json.dumps({
        "ttd_records": median("ttd_records", honest), "ttd_s": median("ttd_s", honest),
        "ttr_records": median("ttr_records", honest), "ttr_s": median("ttr_s", honest),
        "auroc_before": median("auroc_before", honest), "auroc_degraded": median("auroc_degraded", honest),
        "auroc_after": median("auroc_after", honest),
        "recovered": sum(r["promoted"] for r in honest), "honest_seeds": len(honest),
        "worse_promoted": sum(r["promoted"] for r in worse), "worse_seeds": len(worse),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
