"""Turn a model version's files into a predict function: scikit-learn, ONNX (onnxruntime) or MLflow pyfunc.

The flavor is read from the ``MLmodel`` file; a directory holding just an ``.onnx`` file loads as ONNX.
Each loader reports the input it expects (dtype and per-row shape) so callers can validate requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kawa.errors import ModelLoadError

PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its dtype and its shape without the batch axis (None = any size)."""

    name: str
    dtype: np.dtype[Any] | None
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class LoadedModel:
    flavor: str
    predict: PredictFn
    input: TensorSpec
    output: TensorSpec


_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def _read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    file = path / "MLmodel"
    if not file.exists():
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster, less GIL during a swap
    data = yaml.load(file.read_text(), Loader=loader) or {}
    return data if isinstance(data, dict) else {}


def load_onnx(file: Path) -> LoadedModel:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelLoadError("ONNX models need onnxruntime: pip install 'kawa[ml]'") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(file), options, providers=ort.get_available_providers())
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"{file.name}: Kawa serves single-input ONNX models; this one has {len(inputs)}")
    first = inputs[0]
    dtype = np.dtype(_ONNX_TYPES.get(first.type, np.float32))
    shape = tuple(d if isinstance(d, int) else None for d in first.shape[1:]) if first.shape else None
    in_name, out_name = first.name, outputs[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([out_name], {in_name: x})[0])

    out_dtype = _ONNX_TYPES.get(outputs[0].type)
    return LoadedModel(
        "onnx",
        predict,
        TensorSpec(in_name, dtype, shape),
        TensorSpec(out_name, np.dtype(out_dtype) if out_dtype else None, None),
    )


def load_sklearn(path: Path, flavor_conf: dict[str, Any]) -> LoadedModel:
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(str(path))
    n = getattr(model, "n_features_in_", None)
    fn = model.predict

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x))

    return LoadedModel(
        "sklearn",
        predict,
        TensorSpec("input-0", np.dtype(np.float64), (int(n),) if n else None),
        TensorSpec("output-0", None, None),
    )


def load_pyfunc(path: Path) -> LoadedModel:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(path))

    def predict(x: np.ndarray) -> np.ndarray:
        out = model.predict(x)
        return np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)

    return LoadedModel("pyfunc", predict, TensorSpec("input-0", None, None), TensorSpec("output-0", None, None))


def load_model_dir(path: Path) -> LoadedModel:
    """Load the model in ``path`` by its flavor (sklearn > onnx > python_function)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        return load_onnx(path)
    flavors: dict[str, Any] = _read_mlmodel(path).get("flavors") or {}
    try:
        if "sklearn" in flavors:
            return load_sklearn(path, flavors["sklearn"])
        if "onnx" in flavors:
            return load_onnx(path / flavors["onnx"].get("data", "model.onnx"))
        if "python_function" in flavors:
            return load_pyfunc(path)
        onnx_files = sorted(path.glob("*.onnx"))
        if len(onnx_files) == 1:
            return load_onnx(onnx_files[0])
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(f"loading {path} needs a missing package ({exc.name}): pip install 'kawa[ml]'") from exc
    except Exception as exc:
        raise ModelLoadError(f"could not load the model in {path}: {exc}") from exc
    raise ModelLoadError(
        f"no loadable model in {path}: expected an MLmodel file with a sklearn, onnx or python_function "
        "flavor, or a single .onnx file"
    )
