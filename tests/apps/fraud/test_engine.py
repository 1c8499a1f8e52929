"""The compiled engine and its parity gate: lleaves equals LightGBM's own predict, a wrong engine is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.apps.fraud import engine
from kawa.apps.fraud.backfill import numpy_features
from kawa.apps.fraud.labels import oracle_labels
from kawa.apps.fraud.sim import Simulation
from kawa.apps.fraud.train import fit_lightgbm
from kawa.ml import flavors
from kawa.ml.flavors import lleaves_flavor
from kawa.ml.flavors.lleaves_flavor import EngineParityError, parity_report, top_k


@pytest.fixture(scope="module")
def fitted(small_sim: Simulation) -> tuple[Any, np.ndarray]:
    tx = small_sim.tx
    x = numpy_features(tx, oracle_labels(tx, 7))
    booster = fit_lightgbm(x[:20_000], tx.is_fraud[:20_000], {"num_leaves": 15, "num_boost_round": 40})
    return booster, x


def test_lleaves_scores_equal_lightgbm_on_feature_rows(fitted: tuple[Any, np.ndarray], tmp_path: Path) -> None:
    booster, x = fitted
    scorer = engine.build(booster, "lleaves", check=x[:5000], workdir=tmp_path)
    assert scorer.name == "lleaves" and scorer.parity is not None and scorer.parity.passed
    ref = booster.predict(x)
    got = scorer.score(x)
    assert np.max(np.abs(got - ref)) <= 1e-9
    assert set(top_k(got, 100).tolist()) == set(top_k(ref, 100).tolist())
    assert (tmp_path / "model.o").exists()  # the compiled object is cached next to the model text


def test_lleaves_flavour_loads_a_saved_lightgbm_model(fitted: tuple[Any, np.ndarray], tmp_path: Path) -> None:
    booster, x = fitted
    (tmp_path / "m").mkdir()
    booster.save_model(str(tmp_path / "m" / "model.lgb"))  # the layout mlflow.lightgbm.save_model writes
    conf = {"data": "model.lgb", "model_class": "lightgbm.basic.Booster"}
    loaded = flavors.get("lleaves").load(tmp_path / "m", conf)
    assert loaded.flavor == "lleaves" and loaded.input.shape == (x.shape[1],)
    assert np.max(np.abs(loaded.predict(x[:3000]) - booster.predict(x[:3000]))) <= 1e-9


def test_an_engine_that_drifts_is_refused(fitted: tuple[Any, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    booster, x = fitted
    real = lleaves_flavor._lleaves

    def off_by_a_little(b: Any, workdir: Path) -> Any:
        fn = real(b, workdir)
        return lambda data, threads: fn(data, threads) + 1e-7

    monkeypatch.setattr(lleaves_flavor, "_lleaves", off_by_a_little)
    refused = r"refused: lleaves: max \|score - lightgbm\| = 1e-07.*engine='lightgbm'"
    with pytest.raises(EngineParityError, match=refused):
        engine.build(booster, "lleaves", check=x[:2000])


def test_any_scorer_is_gated_and_reports_its_gap(fitted: tuple[Any, np.ndarray]) -> None:
    booster, x = fitted
    reference = engine.build(booster, "lightgbm")
    reversed_ = engine.Scorer("reversed", lambda m: 1.0 - reference.score(m))
    with pytest.raises(EngineParityError, match="top-100 DIFFERENT"):
        engine.checked(reversed_, reference, x[:3000])
    same = engine.checked(engine.Scorer("copy", reference.score), reference, x[:3000])
    assert same.parity is not None and same.parity.max_abs_diff == 0.0


def test_topk_identity_tolerates_only_ties_at_the_boundary() -> None:
    ref = np.array([0.9, 0.8, 0.5, 0.5, 0.1])
    # Rows 2 and 3 tie at the k-th score: either may be in the top 3.
    assert parity_report("x", ref, ref + np.array([0, 0, -1e-12, 1e-12, 0]), k=3).topk_identical
    swapped = ref.copy()
    swapped[[1, 4]] = swapped[[4, 1]]
    report = parity_report("x", ref, swapped, k=2)
    assert not report.topk_identical and not report.passed
    assert parity_report("x", ref, ref, k=2).passed
    # An independent check of the rule: the set of the k largest by sorting.
    rng = np.random.default_rng(0)
    s = rng.random(500)
    assert set(top_k(s, 50).tolist()) == set(np.argsort(s)[-50:].tolist())


def test_onnx_runtime_scores_close_but_not_exact(fitted: tuple[Any, np.ndarray]) -> None:
    booster, x = fitted
    scorer = engine.build(booster, "onnx", check=x[:3000])
    assert scorer.parity is not None
    assert 0.0 < scorer.parity.max_abs_diff < 0.05  # float32 arithmetic: close, not equal
    assert not scorer.parity.passed
    with pytest.raises(EngineParityError):
        engine.build(booster, "onnx", check=x[:3000], gate_onnx=True)


def test_probe_stays_inside_the_training_ranges(fitted: tuple[Any, np.ndarray]) -> None:
    booster, x = fitted
    p = lleaves_flavor.probe(booster, rows=500)
    train = x[:20_000]
    assert p.shape == (500, x.shape[1])
    assert np.all(p >= train.min(axis=0) - 1e-9) and np.all(p <= train.max(axis=0) + 1e-9)


def test_auto_falls_back_and_says_how_to_install(
    fitted: tuple[Any, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kawa.errors import ModelLoadError

    booster, x = fitted
    real = lleaves_flavor._import
    tried: list[str] = []

    def without_compilers(name: str, hint: str) -> Any:
        tried.append(name)
        if name in {"lleaves", "treelite", "tl2cgen"}:
            raise ModelLoadError(f"the {name} engine is not installed: {hint}")
        return real(name, hint)

    monkeypatch.setattr(lleaves_flavor, "_import", without_compilers)
    with pytest.raises(ModelLoadError, match=r"no compiled engine.*lleaves==1\.3\.0 llvmlite==0\.44\.0.*tl2cgen"):
        engine.build(booster, "auto", check=x[:500])
    assert tried[:2] == ["lleaves", "treelite"]  # lleaves first, then the tl2cgen fallback
