"""The ML score: LightGBM on the streaming features beats NEWS2 on held-out simulated patients, and the scoring
function serving it gives the batch model's risk, row for row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kawa.apps.sepsis import fhir
from kawa.apps.sepsis.app_settings import SepsisSettings
from kawa.apps.sepsis.features import batch_features
from kawa.apps.sepsis.pipeline import build_app
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.sim import iter_observations, simulate
from kawa.apps.sepsis.train import TrainingSet, evaluate, fit, hourly_rows, training_set
from kawa.testing import cloud_event, invoke


@pytest.fixture(scope="module")
def trained() -> tuple[Any, TrainingSet]:
    # enriched with septic courses (case-control sampling) so that a small, fast cohort has enough of them
    enriched = {"patients": 200, "hours": 24, "mode": "cohort", "sepsis_share": 0.3, "infection_share": 0.45}
    train = training_set(simulate(SimSettings.model_validate({**enriched, "seed": 21})))
    held = training_set(simulate(SimSettings.model_validate({**enriched, "seed": 22})))
    assert train.y.sum() >= 50 and held.y.sum() >= 50
    return fit(train.x, train.y, seed=1, trees=60), held


def test_the_model_ranks_hours_before_sepsis_better_than_news2_on_unseen_patients(
    trained: tuple[Any, TrainingSet],
) -> None:
    model, held = trained
    m = evaluate(model, held)
    assert m["auroc_model"] == pytest.approx(roc_auc_score(held.y, model.predict_proba(held.x)[:, 1]))
    assert m["auroc_model"] > m["auroc_news2"] + 0.05 and m["auprc_model"] > 2 * m["auprc_news2"], m


def test_labels_are_the_hit_window_and_treated_hours_are_dropped() -> None:
    sim = simulate(SimSettings(patients=120, hours=24, mode="cohort", seed=3))
    data = training_set(sim, window_h=12.0, grace_h=3.0)
    onset = sim.outcomes.onset_h[data.patient]
    assert not np.any(data.time_h > onset + 3.0)
    assert np.array_equal(data.y == 1, (data.time_h >= onset - 12.0) & (data.time_h <= onset + 3.0))
    rows = hourly_rows(sim)
    hours = sim.observations.patient[rows].astype(np.int64) * 1000 + np.floor(sim.observations.time_h[rows])
    assert len(np.unique(hours)) == len(rows)  # one row per patient-hour


def test_the_scoring_function_serves_the_models_risk_on_the_stream(trained: tuple[Any, TrainingSet]) -> None:
    model, _held = trained
    sim = simulate(SimSettings(patients=4, hours=2, seed=5))
    rows = list(iter_observations(sim.observations))
    app = build_app(SepsisSettings(score_source="model", model_threshold=2.0))
    ingested = invoke(app.get("ingest"), cloud_event("dev.kawa.fhir", fhir.encode_bundle(rows)))
    charted = ingested.emitted_to("sepsis.charted")
    fake = {"sepsis-risk@champion": lambda x: model.predict_proba(np.asarray(x))[:, 1]}
    last_row = {}
    for i, o in enumerate(rows):
        last_row[o.patient] = i
    by_alias = {}
    for event in charted:
        out = invoke(app.get("score"), event, models=fake)
        d = out.emitted_to("decisions")[0].get_data()
        by_alias[d["entity"]] = d["score"]
    want = model.predict_proba(batch_features(sim.observations, np.array(sorted(last_row.values()))))[:, 1]
    assert sorted(by_alias.values()) == pytest.approx(sorted(want.tolist()), rel=1e-12)


def test_the_picked_threshold_keeps_news2s_sensitivity_and_is_the_highest_that_does() -> None:
    from kawa.apps.sepsis.pipeline import score_columns
    from kawa.apps.sepsis.train import pick_threshold, side_by_side

    enriched = {"patients": 200, "hours": 24, "mode": "cohort", "sepsis_share": 0.3, "infection_share": 0.45}
    sim = simulate(SimSettings.model_validate({**enriched, "seed": 23}))
    rows = hourly_rows(sim)
    x = batch_features(sim.observations, rows)
    news2 = score_columns(x)[0].astype(np.float64)
    risk = news2 / 20.0 + np.random.default_rng(3).normal(0.0, 0.05, len(news2))  # a noisy copy of NEWS2
    threshold = pick_threshold(sim, rows, risk, news2)

    def sensitivity(t: float) -> float:
        return float(side_by_side(sim, {"m": (risk, t)}, rows=rows)["m"]["sensitivity"])

    base = side_by_side(sim, {"n": (news2, 7.0)}, rows=rows)["n"]["sensitivity"]
    assert base > 0 and sensitivity(threshold) >= base
    higher = np.quantile(risk, np.linspace(0.5, 0.9999, 60))
    assert all(sensitivity(float(g)) < base for g in higher if g > threshold)
