"""ONNX models served by onnxruntime: an ``MLmodel`` with the ``onnx`` flavour, or a bare ``.onnx`` file.

``log_model`` takes a ``ModelProto``, its serialized bytes or a path to an ``.onnx`` file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kawa.errors import ModelLoadError
from kawa.ml.flavors.base import LoadedModel, TensorSpec

MLMODEL_KEY = "onnx"
SUFFIXES: tuple[str, ...] = (".onnx",)
GENERIC = False

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


def log_model(model: Any, *, name: str, input_example: Any = None) -> str:
    import mlflow.onnx
    import onnx

    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    elif isinstance(model, str | os.PathLike):
        model = onnx.load(str(model))
    info = mlflow.onnx.log_model(
        model, name=name, input_example=input_example, pip_requirements=["onnx", "onnxruntime"]
    )
    return str(info.model_uri)


def load(path: Path, conf: Mapping[str, Any]) -> LoadedModel:
    file = path if path.is_file() else path / str(conf.get("data", "model.onnx"))
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
