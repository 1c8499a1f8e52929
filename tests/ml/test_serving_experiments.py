"""`kawa serve-model --experiment`: each request's unit is served by its arm's model over real HTTP, and the
prediction records carry the arm and its propensity."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from kawa.config import KawaConfig
from kawa.evaluation.assignment import assign
from kawa.evaluation.experiments import ExperimentStore, ExperimentsView, read_to_end
from kawa.evaluation.spec import Arm, ExperimentSpec
from kawa.ml.prediction_log import read_prediction
from kawa.ml.registry import Registry
from kawa.ml.serving import ModelServer, free_port
from tests.ml.helpers import register_versions, wait_for

X = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)
BODY = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}


def _spec(model: str) -> ExperimentSpec:
    return ExperimentSpec(
        name="canary", model=model, unit="customer", salt="c1", primary_metric="converted",
        maturity_window_s=60, metric_kind="proportion", horizon=1000,
        arms=(Arm("champion", 0.7, model=f"{model}@champion"), Arm("challenger", 0.3, model=f"{model}@challenger")),
    )  # fmt: skip


def test_units_are_served_by_their_arm_and_recorded(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    v1, v2 = register_versions(model_name, 2)
    registry = Registry(config, memory_log)
    registry.promote(model_name, v1)
    registry.set_alias(model_name, "challenger", v2)
    spec = _spec(model_name)
    store = ExperimentStore(memory_log)
    store.create(spec, shadow=True)
    view = ExperimentsView(memory_log, refresh_s=0.0)
    server = ModelServer(config, f"{model_name}@champion", port=free_port(), log=memory_log, experiment="canary",
                         experiments=view).start()  # fmt: skip
    url = f"/v2/models/{model_name}/infer"
    try:
        with httpx.Client(base_url=server.url) as client:
            arms = {}
            for n in range(30):
                unit = f"c{n}"
                r = client.post(url, json={**BODY, "parameters": {"unit": unit}})
                assert r.status_code == 200, r.text
                body = r.json()
                expected = assign(unit, "c1", [("champion", 0.7), ("challenger", 0.3)])
                assert body["parameters"] == {"experiment": "canary", "arm": expected.arm,
                                              "propensity": expected.propensity, "acts": True}  # fmt: skip
                assert body["model_version"] == str(v1 if expected.arm == "champion" else v2)
                arms[unit] = expected.arm
            assert set(arms.values()) == {"champion", "challenger"}
            r = client.post(url, json=BODY)
            assert r.status_code == 400 and '"unit"' in r.json()["error"]
            store.stop("canary", "enough")
            r = client.post(url, json={**BODY, "parameters": {"unit": "c1"}})
            assert r.json()["parameters"] == {"experiment": "canary", "status": "stopped"}
            assert r.json()["model_version"] == str(v1)

        def records() -> list[Any]:
            return [read_prediction(r) for r in read_to_end(memory_log, config.ml.predictions_topic)]

        # 30 units in shadow mode: each scored by both arms, one acting; then 1 after the stop, outside it.
        wait_for(lambda: len(records()) >= 61, timeout=30)
        recorded = records()
        acting = [p for p in recorded if p.experiment == "canary" and p.acting]
        assert sorted((p.unit, p.arm) for p in acting) == sorted(arms.items())
        assert all(p.propensity == (0.7 if p.arm == "champion" else 0.3) for p in acting)
        shadow = [p for p in recorded if p.experiment == "canary" and p.acting is False]
        assert sorted(p.unit or "" for p in shadow) == sorted(arms)
        assert all(p.arm != arms[p.unit or ""] for p in shadow)
        assert [p.experiment for p in recorded if p.experiment is None] == [None]
    finally:
        server.stop()
        view.close()
        registry.close()
