"""The ML score: gradient boosting (LightGBM) on the 105 streaming features, trained on simulated history.

``kawa jobs submit kawa.apps.sepsis.train:train`` (or :func:`train` from code) simulates a cohort, takes each
patient's features at the last vital set of every hour (:func:`~kawa.apps.sepsis.features.batch_features`:
bit for bit what the scoring function computes on the stream), labels a row positive when it falls where an
alert counts as a hit — from ``window_h`` before Sepsis-3 onset to ``grace_h`` after — and drops a septic
patient's rows after that (they are being treated), fits an ``LGBMClassifier``, reports held-out hourly AUROC
and AUPRC beside NEWS2's, logs it to MLflow with the ``lightgbm`` flavour, registers it as
``settings.model_name`` and points ``settings.model_alias`` at it when the model has none. Then
``score_source: model`` makes the scoring function use it.

:func:`hourly_rows`, :func:`training_set` and :func:`fit` are pure (no I/O) and tested; :func:`train` adds
the tracking and the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from kawa.apps.sepsis.app_settings import SepsisSettings
from kawa.apps.sepsis.settings import SimSettings

if TYPE_CHECKING:
    from kawa.apps.sepsis.sim import Simulation
    from kawa.config import KawaConfig

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741

__all__ = ["TrainingSet", "evaluate", "fit", "hourly_rows", "job", "train", "training_set"]


@dataclass(frozen=True)
class TrainingSet:
    """Features (rows x 105), labels, the patient and time of each row, and NEWS2 there (the baseline)."""

    x: F
    y: npt.NDArray[np.int8]
    patient: I
    time_h: F
    news2: I


def hourly_rows(sim: Simulation) -> I:
    """Rows of the observations table that end each patient's last vital set of every hour."""
    from kawa.apps.sepsis.features import set_ends

    obs = sim.observations
    ends = set_ends(obs)
    hour = obs.patient[ends].astype(np.int64) * 100_000 + np.floor(obs.time_h[ends]).astype(np.int64)
    order = np.lexsort((obs.time_h[ends], hour))
    h = hour[order]
    last = np.append(h[:-1] != h[1:], True)
    return np.sort(ends[order][last])


def training_set(sim: Simulation, window_h: float = 12.0, grace_h: float = 3.0) -> TrainingSet:
    """The labelled hourly rows of ``sim`` (see the module doc)."""
    from kawa.apps.sepsis.features import NAMES, batch_features, column

    rows = hourly_rows(sim)
    obs = sim.observations
    pat = obs.patient[rows].astype(np.int64)
    t = obs.time_h[rows]
    onset = sim.outcomes.onset_h[pat]
    keep = ~(t > onset + grace_h)  # NaN onset: keep
    rows, pat, t, onset = rows[keep], pat[keep], t[keep], onset[keep]
    x = batch_features(obs, rows)
    y = ((t >= onset - window_h) & (t <= onset + grace_h)).astype(np.int8)
    from kawa.apps.sepsis.pipeline import score_columns

    assert x.shape[1] == len(NAMES) and column("hr_last") == 0
    return TrainingSet(x, y, pat, t, score_columns(x)[0])


def fit(x: F, y: npt.NDArray[np.int8], *, seed: int = 16, trees: int = 120) -> Any:
    """A LightGBM classifier (missing values are LightGBM's NaN branch: a code never measured is informative)."""
    import lightgbm

    model = lightgbm.LGBMClassifier(
        n_estimators=trees, learning_rate=0.05, num_leaves=31, min_child_samples=40, subsample=0.8, subsample_freq=1,
        colsample_bytree=0.8, random_state=seed, verbose=-1, n_jobs=1,
    )  # fmt: skip
    model.fit(x, y)
    return model


def evaluate(model: Any, data: TrainingSet) -> dict[str, float]:
    """Hourly AUROC and AUPRC of the model and of NEWS2 on ``data``."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    risk = model.predict_proba(data.x)[:, 1]
    return {
        "auroc_model": float(roc_auc_score(data.y, risk)),
        "auprc_model": float(average_precision_score(data.y, risk)),
        "auroc_news2": float(roc_auc_score(data.y, data.news2)),
        "auprc_news2": float(average_precision_score(data.y, data.news2)),
        "prevalence": float(data.y.mean()),
        "rows": float(len(data.y)),
    }


def job(settings: SepsisSettings, backends: Any, progress: Any = None) -> dict[str, Any]:
    """The trainer of the plugin's :class:`~kawa.apps.plugin.ModelDecl` (``train(settings, backends, progress)``)."""
    return train(config=backends.config, settings=settings)


def train(
    patients: int = 1500,
    hours: float = 48.0,
    seed: int = 16,
    promote: Literal["if-none", "always", "never"] = "if-none",
    register: bool = True,
    config: KawaConfig | None = None,
    settings: SepsisSettings | None = None,
    threshold: bool = False,
) -> dict[str, Any]:
    """Simulate ``patients`` admissions over ``hours`` (cohort mode: whole stays), fit on 3/4 of the patients,
    evaluate on the rest; log, register and (``promote``) alias the model. Returns the metrics, the version
    and whether it was promoted; with ``threshold``, also the alert threshold :func:`pick_threshold` finds on
    the training patients (``threshold``)."""
    from kawa.apps.sepsis.sim import simulate

    started = time.perf_counter()
    s = settings or SepsisSettings()
    sim = simulate(SimSettings(patients=patients, hours=hours, mode="cohort", seed=seed))
    data = training_set(sim, s.window_h, s.grace_h)
    test = np.random.default_rng(seed).random(patients) < 0.25
    held = test[data.patient]

    def part(m: npt.NDArray[np.bool_]) -> TrainingSet:
        return TrainingSet(data.x[m], data.y[m], data.patient[m], data.time_h[m], data.news2[m])

    model = fit(data.x[~held], data.y[~held], seed=seed)
    metrics = evaluate(model, part(held))
    result: dict[str, Any] = {**metrics, "patients": patients, "train_rows": int((~held).sum())}
    if threshold:
        rows = hourly_rows(sim)
        keep = ~test[sim.observations.patient[rows].astype(np.int64)]
        rows = rows[keep]
        from kawa.apps.sepsis.features import batch_features
        from kawa.apps.sepsis.pipeline import score_columns

        x = batch_features(sim.observations, rows)
        risk = model.predict_proba(x)[:, 1]
        result["threshold"] = pick_threshold(sim, rows, risk, score_columns(x)[0].astype(np.float64), s)
    if register:
        result.update(_track(s, config, model, data.x[:5], metrics, seed, promote, patients, hours))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _track(s: SepsisSettings, config: KawaConfig | None, model: Any, example: F, metrics: dict[str, float],
           seed: int, promote: str, patients: int, hours: float) -> dict[str, Any]:  # fmt: skip
    from kawa.backends import open_backends
    from kawa.ml import tracking
    from kawa.ml.registry import Registry

    params = {"model": "lightgbm", "features": 105, "patients": patients, "hours": hours, "seed": seed,
              "window_h": s.window_h, "grace_h": s.grace_h}  # fmt: skip
    with open_backends(config) as backends:
        with tracking.run("sepsis-risk", run_name="sepsis-lightgbm", params=params, config=backends.config) as run:
            run.log_lineage(source=f"sim:seed={seed},patients={patients}", description="simulated hospital stays")
            run.log_metrics(metrics)
            version = run.log_model(model, flavor="lightgbm", register_as=s.model_name, input_example=example)
        out: dict[str, Any] = {"model": s.model_name, "version": version, "promoted": False}
        if version is None:
            return out
        registry = Registry(backends)
        try:
            current = registry.alias_target(s.model_name, s.model_alias)
            if promote == "always" or (promote == "if-none" and current is None):
                registry.promote(s.model_name, version, s.model_alias)
                out["promoted"] = True
        finally:
            registry.close()
    return out


def side_by_side(sim: Simulation, scorers: dict[str, tuple[F, float]], s: SepsisSettings | None = None,
                 rows: I | None = None) -> dict[str, Any]:  # fmt: skip
    """The clinical metrics (:mod:`kawa.apps.sepsis.metrics`, everything matured) of each scorer — name →
    (score at each of ``rows``, threshold) — through the app's alert policy, on ``sim``'s hourly rows; and
    the normalised PhysioNet utility of its hourly predictions (score >= threshold, no policy)."""
    from dataclasses import asdict

    from kawa.apps.sepsis.alerts import AlertPolicy, run
    from kawa.apps.sepsis.metrics import Windows, clinical_metrics, cohort_of, normalised_utility

    s = s or SepsisSettings()
    rows = hourly_rows(sim) if rows is None else rows
    pat = sim.observations.patient[rows].astype(np.int64)
    t = sim.observations.time_h[rows]
    as_of = float(np.max(sim.patients.discharge_h)) + 100.0
    out: dict[str, Any] = {}
    for name, (score, threshold) in scorers.items():
        policy = AlertPolicy(threshold, s.suppress_h, s.budget_per_h)
        got = [(p, u) for p, u, v in run(policy, zip(pat.tolist(), t.tolist(), score.tolist(), strict=True))
               if v.alert]  # fmt: skip
        m = clinical_metrics([p for p, _ in got], [u for _, u in got], cohort_of(sim), as_of,
                             Windows(s.window_h, s.grace_h))  # fmt: skip
        out[name] = asdict(m) | {"utility": normalised_utility(pat, t, score >= threshold, sim.outcomes.onset_h)}
    return out


def pick_threshold(sim: Simulation, rows: I, risk: F, news2: F, s: SepsisSettings | None = None,
                   news2_threshold: float = 7.0) -> float:  # fmt: skip
    """The highest threshold of the model's ``risk`` (at ``rows`` of ``sim``) whose alerts, through the app's
    policy, keep the sensitivity of NEWS2 >= ``news2_threshold``: pick it on training data, never on the
    cohort it is measured on."""
    s = s or SepsisSettings()
    base = side_by_side(sim, {"news2": (news2, news2_threshold)}, s, rows)["news2"]["sensitivity"]
    grid = np.quantile(risk, np.linspace(0.5, 0.9999, 60))
    threshold = float(grid[0])
    for g in grid:
        if side_by_side(sim, {"model": (risk, float(g))}, s, rows)["model"]["sensitivity"] >= base:
            threshold = float(g)
    return threshold


def main(argv: list[str] | None = None) -> None:
    """``python -m kawa.apps.sepsis.train [--patients N]``: train on one simulated cohort, pick the model's
    threshold there (the sensitivity of NEWS2 >= 7), and print the metrics of the model, NEWS2, qSOFA and SIRS
    on a second, unseen cohort as one JSON line."""
    import argparse
    import json

    from kawa.apps.sepsis.features import batch_features
    from kawa.apps.sepsis.pipeline import score_columns
    from kawa.apps.sepsis.sim import simulate

    parser = argparse.ArgumentParser(prog="python -m kawa.apps.sepsis.train")
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--hours", type=float, default=48.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    s = SepsisSettings()
    train_sim = simulate(SimSettings(patients=args.patients, hours=args.hours, mode="cohort", seed=16))
    data = training_set(train_sim, s.window_h, s.grace_h)
    model = fit(data.x, data.y, seed=16)

    def scored(sim: Simulation) -> tuple[I, dict[str, F]]:
        rows = hourly_rows(sim)
        x = batch_features(sim.observations, rows)
        n2, q, si = score_columns(x)
        return rows, {"model": model.predict_proba(x)[:, 1], "news2": n2.astype(float), "qsofa": q.astype(float),
                      "sirs": si.astype(float)}  # fmt: skip

    rows, sc = scored(train_sim)
    threshold = pick_threshold(train_sim, rows, sc["model"], sc["news2"], s)
    test_sim = simulate(SimSettings(patients=args.patients, hours=args.hours, mode="cohort", seed=17))
    rows, sc = scored(test_sim)
    held = training_set(test_sim, s.window_h, s.grace_h)
    out = side_by_side(test_sim, {"model": (sc["model"], threshold), "news2": (sc["news2"], 7.0),
                                  "news2_5": (sc["news2"], 5.0), "qsofa": (sc["qsofa"], 2.0),
                                  "sirs": (sc["sirs"], 2.0)}, s, rows)  # fmt: skip
    summary = {"patients": args.patients, "model_threshold": round(threshold, 4), **evaluate(model, held)}
    for name, m in out.items():
        summary |= {f"ppv_{name}": m["ppv"], f"sens_{name}": m["sensitivity"],
                    f"lead_h_{name}": m["lead_time_h_median"], f"gain_vs_screen_h_{name}": m["gain_vs_screen_h_median"],
                    f"alerts_per_100pd_{name}": m["alerts_per_100_patient_days"],
                    f"utility_{name}": m["utility"]}  # fmt: skip
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))


if __name__ == "__main__":
    main()
