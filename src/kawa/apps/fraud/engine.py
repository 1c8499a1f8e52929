"""The fraud model's scoring engines: LightGBM's own ``predict``, a compiled engine, ONNX Runtime.

Every engine is a :class:`Scorer`: a name and ``score(features) -> probabilities``. The compiled ones
(lleaves, tl2cgen; see :mod:`kawa.ml.flavors.lleaves_flavor`) are gated: :func:`build` checks them against the
booster's own ``predict`` on the rows given as ``check`` (real feature rows are the best probe) and refuses
one whose scores differ by more than 1e-9 or whose top-k rows differ (:class:`EngineParityError`). ONNX
Runtime computes in float32, so its probabilities shift (by up to a few hundredths on fraud models): it is
here as the bench's point of comparison, and :func:`build` gates it only when asked (``gate_onnx``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kawa.apps.fraud.errors import MissingDependency
from kawa.apps.fraud.transactions import F64
from kawa.ml.flavors.lleaves_flavor import (
    EngineParityError,
    ParityReport,
    compile_booster,
    gate,
    parity_report,
    probe,
)

Engine = Literal["lleaves", "tl2cgen", "auto", "lightgbm", "onnx"]

__all__ = [
    "Engine", "EngineParityError", "ParityReport", "Scorer", "build", "checked", "load_booster", "parity_report",
    "require_lightgbm",
]


@dataclass(frozen=True)
class Scorer:
    """``score(x)``: P(fraud) for each row of the feature matrix ``x`` (float64, one column a feature)."""

    name: str
    score: Callable[[F64], F64]
    parity: ParityReport | None = None


def require_lightgbm() -> Any:
    """The lightgbm module, or :class:`MissingDependency` saying how to install it."""
    try:
        return importlib.import_module("lightgbm")
    except ImportError as exc:
        raise MissingDependency("the fraud model needs LightGBM: pip install lightgbm==4.7.0") from exc


def load_booster(model: Any) -> Any:
    """A ``lightgbm.Booster`` from a booster, an ``LGBMClassifier``, a model file path or model text."""
    lightgbm = require_lightgbm()
    if isinstance(model, lightgbm.Booster):
        return model
    if hasattr(model, "booster_"):
        return model.booster_
    if isinstance(model, Path) or (isinstance(model, str) and "\n" not in model):
        return lightgbm.Booster(model_file=str(model))
    return lightgbm.Booster(model_str=str(model))


def lightgbm_scorer(booster: Any, threads: int = 2) -> Scorer:
    def score(x: F64) -> F64:
        return np.asarray(booster.predict(x, num_threads=threads), dtype=np.float64)

    return Scorer("lightgbm", score)


def onnx_scorer(booster: Any, threads: int = 2) -> Scorer:
    """The booster converted by onnxmltools and run by ONNX Runtime (float32 inputs, P(class 1))."""
    try:
        import onnxruntime as ort
        convert_lightgbm = importlib.import_module("onnxmltools").convert_lightgbm
        types = importlib.import_module("onnxmltools.convert.common.data_types")
    except ImportError as exc:
        raise MissingDependency(f"the ONNX engine needs onnxmltools and onnxruntime: pip install onnxmltools ({exc})"
                                ) from exc
    n = int(booster.num_feature())
    proto = convert_lightgbm(booster, initial_types=[("input", types.FloatTensorType([None, n]))],
                             target_opset=15, zipmap=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[-1].name

    def score(x: F64) -> F64:
        proba = session.run([output], {"input": np.asarray(x, dtype=np.float32)})[0]
        return np.asarray(proba, dtype=np.float64)[:, -1]

    return Scorer("onnx", score)


def build(model: Any, engine: Engine = "auto", *, check: F64 | None = None, threads: int = 2, k: int = 100,
          workdir: str | Path | None = None, gate_onnx: bool = False) -> Scorer:
    """The scorer ``engine`` for ``model`` (see :func:`load_booster`). A compiled engine (``lleaves``,
    ``tl2cgen``, ``auto`` = lleaves else tl2cgen) is checked against ``Booster.predict`` on ``check``
    (default: a probe inside the training ranges) and refused with :class:`EngineParityError` when it
    differs. ``onnx`` carries its parity report against the same 1e-9 (which it fails: float32), and is
    refused only with ``gate_onnx``."""
    booster = load_booster(model)
    if engine == "lightgbm":
        return lightgbm_scorer(booster, threads)
    x = probe(booster) if check is None else np.asarray(check, dtype=np.float64)
    if engine == "onnx":
        scorer = onnx_scorer(booster, threads)
        reference = lightgbm_scorer(booster, threads).score(x)
        report = parity_report("onnx", reference, scorer.score(x), k=k, tolerance=1e-9)
        if gate_onnx:
            gate(report)
        return Scorer("onnx", scorer.score, report)
    compiled = compile_booster(booster, engine, check=x, threads=threads, k=k, workdir=workdir)  # gated

    def score(x: F64) -> F64:
        return compiled.predict(x)

    return Scorer(compiled.engine, score, compiled.parity)


def checked(scorer: Scorer, reference: Scorer, x: F64, *, k: int = 100, tolerance: float | None = None) -> Scorer:
    """``scorer`` after the parity gate against ``reference`` on ``x`` (any engine, e.g. one built
    elsewhere): :class:`EngineParityError` when it fails."""
    report = gate(parity_report(scorer.name, reference.score(x), scorer.score(x), k=k, tolerance=tolerance))
    return Scorer(scorer.name, scorer.score, report)
