"""Open Inference Protocol v2 (KServe / Triton REST) tensors: request decoding and response encoding.

Decoding checks what a client can get wrong and says so (HTTP 400 with ``{"error": "..."}``): JSON shape of
the request, the number of inputs, the datatype name, data that does not match the datatype (text for
FP32, fractions for INT64), data whose count does not match the shape, and shapes or datatypes the model
cannot take. Numeric datatypes are cast to the model's input dtype when the cast keeps the kind
(int → float, FP64 → FP32); BYTES is not accepted by the numeric models Kawa serves.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from kawa.errors import InvalidModelInput
from kawa.ml.loaders import TensorSpec

try:  # orjson is faster when present; json is the fallback
    import orjson

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

    def dumps(obj: Any) -> bytes:
        out: bytes = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        return out

except ImportError:  # pragma: no cover - depends on the environment

    def loads(data: bytes) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


DATATYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_NAMES = {np.dtype(t).str: name for name, t in DATATYPES.items()}


def datatype_of(dtype: np.dtype[Any]) -> str:
    return _NAMES.get(dtype.str, "BYTES")


def spec_shape(spec: TensorSpec) -> list[int]:
    return [-1, *[-1 if d is None else d for d in spec.shape]] if spec.shape is not None else [-1]


def decode_request(body: bytes, spec: TensorSpec) -> tuple[np.ndarray, str | None, dict[str, Any]]:
    """The input tensor of an infer request (cast to the model's dtype), the request's ``id`` and its
    ``parameters`` (an object; empty when absent)."""
    try:
        request = loads(body)
    except ValueError as exc:
        raise InvalidModelInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise InvalidModelInput('request must be a JSON object with an "inputs" list')
    inputs = request["inputs"]
    if len(inputs) != 1:
        raise InvalidModelInput(f"this model takes exactly one input tensor; the request has {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise InvalidModelInput("each input must be an object with name, shape, datatype and data")
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) or not shape:
        raise InvalidModelInput(f"input shape must be a non-empty list of non-negative integers, got {shape!r}")
    if datatype == "BYTES":
        raise InvalidModelInput("datatype BYTES is not supported by this model; send a numeric datatype")
    if datatype not in DATATYPES:
        raise InvalidModelInput(f"unknown datatype {datatype!r}; use one of {', '.join(DATATYPES)}")
    if not isinstance(data, list):
        raise InvalidModelInput('input "data" must be a (flat or nested) list of numbers')
    target = np.dtype(DATATYPES[datatype])
    try:
        raw = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidModelInput(f"input data is not a regular array: {exc}") from None
    if raw.size and raw.dtype.kind not in "biuf":
        raise InvalidModelInput(f"input data must be numbers of datatype {datatype}; got {raw.dtype.kind!r} values")
    if raw.size and target.kind in "iu" and raw.dtype.kind == "f":
        raise InvalidModelInput(f"datatype {datatype} needs integers; the data has fractional numbers")
    if raw.size and target.kind == "b" and raw.dtype.kind != "b":
        raise InvalidModelInput("datatype BOOL needs true/false values")
    expected = math.prod(shape)
    if raw.size != expected:
        raise InvalidModelInput(f"data has {raw.size} values but shape {shape} holds {expected}")
    x = raw.astype(target, copy=False).reshape(shape)
    if spec.shape is not None:
        rows = shape[1:]
        mismatch = any(w is not None and w != g for w, g in zip(spec.shape, rows, strict=False))
        if len(rows) != len(spec.shape) or mismatch:
            raise InvalidModelInput(f"model expects shape {spec_shape(spec)}; got {shape}")
    if spec.dtype is not None and x.dtype != spec.dtype:
        if not np.can_cast(x.dtype, spec.dtype, "same_kind"):
            raise InvalidModelInput(f"model takes {datatype_of(spec.dtype)}; cannot use {datatype} data")
        x = x.astype(spec.dtype)
    request_id = request.get("id")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidModelInput('request "parameters" must be an object')
    return x, str(request_id) if request_id is not None else None, parameters


def encode_response(
    model: str, version: int, output: np.ndarray, request_id: str | None, output_name: str = "output-0",
    parameters: dict[str, Any] | None = None,
) -> bytes:
    out = np.asarray(output)
    body: dict[str, Any] = {
        "model_name": model,
        "model_version": str(version),
        "outputs": [
            {
                "name": output_name,
                "shape": list(out.shape),
                "datatype": datatype_of(out.dtype),
                "data": out.ravel().tolist(),
            }
        ],
    }
    if request_id is not None:
        body["id"] = request_id
    if parameters:
        body["parameters"] = parameters
    return dumps(body)
