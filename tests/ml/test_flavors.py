"""Flavours by name: the built-in ones, a new one from one module and one register line, and the error table."""

from __future__ import annotations

import importlib.util
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.errors import BackendUnavailable, ModelError, ModelLoadError, ModelNotFound, TrackingUnavailable
from kawa.ml import flavors, tracking
from kawa.ml.flavors import LoadedModel, TensorSpec
from kawa.ml.loaders import load_model_dir
from kawa.ml.mlflow import mlflow_errors
from kawa.ml.predictors import ModelManager


def test_builtin_flavours_are_registered_and_unknown_ones_say_what_to_do() -> None:
    assert {"sklearn", "onnx", "pyfunc", "lightgbm"} <= set(flavors.names())
    assert flavors.get("onnx").SUFFIXES == (".onnx",)
    assert flavors.get("pyfunc").GENERIC and not flavors.get("sklearn").GENERIC
    with pytest.raises(ModelError, match=r"unknown model flavor 'torchscript'.*kawa.ml.flavors.register"):
        flavors.get("torchscript")
    # A specific flavour wins over the generic python_function section most MLflow models also carry.
    assert [n for n, _ in flavors.for_mlmodel(["python_function", "sklearn"])] == ["sklearn", "pyfunc"]


@pytest.fixture
def doubling_flavor() -> Iterator[str]:
    """A new flavour, ``doubling``: one module (built here) and one register line."""
    module = types.ModuleType("doubling_flavor")
    module.MLMODEL_KEY = "doubling"  # type: ignore[attr-defined]
    module.SUFFIXES = (".dbl",)  # type: ignore[attr-defined]
    module.GENERIC = False  # type: ignore[attr-defined]

    def log_model(model: Any, *, name: str, input_example: Any = None) -> str:
        import tempfile

        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "MLmodel").write_text(f"flavors:\n  doubling:\n    factor: {float(model)}\n")
            mlflow.log_artifacts(tmp, artifact_path=name)
        run = mlflow.active_run()
        assert run is not None
        return f"runs:/{run.info.run_id}/{name}"

    def load(path: Path, conf: Mapping[str, Any]) -> LoadedModel:
        factor = float(conf["factor"]) if conf else float(path.read_text())

        def predict(x: np.ndarray) -> np.ndarray:
            return np.asarray(x) * factor

        return LoadedModel("doubling", predict, TensorSpec("x", None, None), TensorSpec("y", None, None))

    module.log_model = log_model  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    flavors.register("doubling", module)
    yield "doubling"
    flavors._REGISTERED.pop("doubling", None)


def test_a_new_flavour_is_one_module_and_one_register_line(
    config: KawaConfig, memory_log: Any, model_name: str, doubling_flavor: str, tmp_path: Path
) -> None:
    with tracking.run("flavor-test", config=config) as run:
        version = run.log_model(2.0, flavor=doubling_flavor, register_as=model_name)
    assert version is not None
    with ModelManager(config, memory_log) as manager:
        model = manager.get(f"{model_name}/{version}")
        assert model.current().flavor == "doubling"
        np.testing.assert_array_equal(model.predict([[1.0, 3.0]]), [[2.0, 6.0]])
    bare = tmp_path / "m.dbl"
    bare.write_text("3")
    np.testing.assert_array_equal(load_model_dir(bare).predict(np.ones(2)), [3.0, 3.0])


def test_lightgbm_loads_or_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  lightgbm:\n    data: model.lgb\n  python_function:\n    loader_module: mlflow.lightgbm\n"
    )
    if importlib.util.find_spec("lightgbm") is None:
        with pytest.raises(ModelLoadError, match=r"pip install 'kawa\[lightgbm\]'"):
            load_model_dir(tmp_path)
    else:  # the extra is installed: a real booster round-trips through the flavour
        import lightgbm
        import mlflow.lightgbm

        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 3))
        y = (x[:, 0] > 0).astype(int)
        booster = lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, y), 10)
        mlflow.lightgbm.save_model(booster, str(tmp_path / "saved"))
        loaded = load_model_dir(tmp_path / "saved")
        assert loaded.flavor == "lightgbm" and loaded.input.shape == (3,)
        risk = loaded.predict(x)
        assert ((risk > 0.5) == y).mean() > 0.9


def test_mlflow_errors_map_through_one_table() -> None:
    from mlflow.exceptions import MlflowException, RestException

    with pytest.raises(ModelNotFound, match="what to do"), mlflow_errors("reading", not_found="what to do"):
        raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model not found"})
    with pytest.raises(TrackingUnavailable, match=r"check ml\.tracking_uri") as unavailable, mlflow_errors("listing"):
        raise RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"})
    assert isinstance(unavailable.value, BackendUnavailable)
    with pytest.raises(ModelError, match="registering: bad name") as other, mlflow_errors("registering"):
        raise MlflowException("bad name", error_code=1000)  # INVALID_PARAMETER_VALUE
    assert type(other.value) is ModelError
    import requests

    with pytest.raises(TrackingUnavailable, match="cannot reach the MLflow server"), mlflow_errors("listing"):
        raise requests.exceptions.ConnectionError("Connection refused")
    with pytest.raises(TrackingUnavailable), mlflow_errors("listing"):
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded")
        except requests.exceptions.ConnectionError as exc:
            raise MlflowException("API request to http://x failed") from exc
