"""LightGBM scored by a compiled engine (``lleaves``, LLVM; or ``tl2cgen``, C via gcc), behind a parity gate.

A compiled engine turns a booster's trees into machine code: on two cores lleaves scores 4-8x faster than
``Booster.predict``. Compilers have bugs and version skews, so no compiled engine is handed out before it
passes the **parity gate** (:func:`parity_report`, :func:`gate`): on a probe matrix its scores must equal the
booster's own ``predict`` within the engine's tolerance (1e-9 for lleaves and tl2cgen in double precision)
and the top-k rows must be the same rows. An engine that fails is refused with :class:`EngineParityError`.

As a flavour (``flavors.get("lleaves").load(path, conf)``) it loads an MLflow ``lightgbm`` model directory,
compiles it and gates it on a seeded probe drawn inside each feature's range (the booster's
``feature_infos``). Logging delegates to the ``lightgbm`` flavour, so the registered artifact stays a plain
LightGBM model that any MLflow client can read. lleaves 1.3 needs ``llvmlite==0.44.0`` (0.45 breaks it).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kawa.errors import ModelLoadError
from kawa.ml.flavors.base import LoadedModel, TensorSpec

MLMODEL_KEY = "lightgbm"
SUFFIXES: tuple[str, ...] = ()
GENERIC = False

EngineName = Literal["lleaves", "tl2cgen"]
TOLERANCE: dict[str, float] = {"lleaves": 1e-9, "tl2cgen": 1e-9, "onnx": 0.05}
"""Largest score gap to ``Booster.predict`` an engine may show (ONNX Runtime computes in float32)."""

F64 = npt.NDArray[np.float64]


class EngineParityError(ModelLoadError):
    """A compiled engine's scores differ from LightGBM's own ``predict``: it is refused."""


@dataclass(frozen=True)
class ParityReport:
    """How a candidate engine's scores compare with the reference's on the same rows."""

    engine: str
    rows: int
    max_abs_diff: float
    tolerance: float
    k: int
    topk_identical: bool

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.topk_identical

    def describe(self) -> str:
        return (f"{self.engine}: max |score - lightgbm| = {self.max_abs_diff:.3g} (tolerance {self.tolerance:.0e}) "
                f"on {self.rows} rows, top-{self.k} {'identical' if self.topk_identical else 'DIFFERENT'}")


def top_k(scores: F64, k: int) -> npt.NDArray[np.int64]:
    """Row indices of the ``k`` highest scores, ties to the lower row (a total order, so it is reproducible)."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k].astype(np.int64)


def parity_report(engine: str, reference: F64, candidate: F64, *, k: int = 100,
                  tolerance: float | None = None) -> ParityReport:
    """Compare ``candidate`` with ``reference`` scores (one a row). The top-k sets must be equal, except for
    rows whose reference score is within twice the tolerance of the k-th (ties that an engine inside the
    tolerance may order either way)."""
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return ParityReport(engine, len(ref), float("inf"), tolerance or 0.0, k, False)
    tol = TOLERANCE.get(engine, 1e-9) if tolerance is None else tolerance
    gap = float(np.max(np.abs(ref - cand))) if len(ref) else 0.0
    if np.isnan(gap) or bool(np.any(np.isnan(ref) != np.isnan(cand))):
        gap = float("inf")
    kk = min(k, len(ref))
    a, b = set(top_k(ref, kk).tolist()), set(top_k(cand, kk).tolist())
    same = a == b
    if not same and kk:
        kth = float(ref[top_k(ref, kk)[-1]])
        same = all(abs(float(ref[i]) - kth) <= 2 * tol for i in a ^ b)
    return ParityReport(engine, len(ref), gap, tol, kk, same)


def gate(report: ParityReport) -> ParityReport:
    """``report`` when it passed; else :class:`EngineParityError` saying what differs and what to do."""
    if not report.passed:
        raise EngineParityError(
            f"compiled engine refused: {report.describe()}. Score with LightGBM's own predict (engine='lightgbm') "
            "or fix the engine's version (lleaves 1.3 needs llvmlite==0.44.0)"
        )
    return report


def probe(booster: Any, rows: int = 2000, seed: int = 0) -> F64:
    """A seeded probe matrix: each feature uniform in its training range (``feature_infos``), a tenth of the
    values set to the range's ends, so the trees' extreme branches are exercised too."""
    infos = booster.dump_model(num_iteration=-1).get("feature_infos", {})
    names = booster.feature_name()
    rng = np.random.default_rng(seed)
    x = np.zeros((rows, len(names)))
    for j, name in enumerate(names):
        lo, hi = _range(infos.get(name))
        x[:, j] = rng.uniform(lo, hi, rows)
        ends = rng.random(rows) < 0.1
        x[ends, j] = np.where(rng.random(int(ends.sum())) < 0.5, lo, hi)
    return x


def _range(info: Any) -> tuple[float, float]:
    if isinstance(info, dict) and "min_value" in info:
        return float(info["min_value"]), float(info["max_value"])
    if isinstance(info, str) and info.startswith("["):
        lo, hi = info.strip("[]").split(":")
        return float(lo), float(hi)
    return 0.0, 1.0


class CompiledBooster:
    """A booster compiled by ``engine``; :meth:`predict` returns what ``Booster.predict`` does (for a binary
    objective, the probability of class 1). Build it with :func:`compile_booster`, which gates it."""

    def __init__(self, engine: str, predict: Any, num_feature: int, threads: int) -> None:
        self.engine = engine
        self._predict = predict
        self.num_feature = num_feature
        self.threads = threads
        self.parity: ParityReport | None = None  # set by compile_booster once the gate passed

    def predict(self, x: Any, *, threads: int | None = None) -> F64:
        return np.asarray(self._predict(np.ascontiguousarray(x, dtype=np.float64), threads or self.threads),
                          dtype=np.float64)


def _import(name: str, hint: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModelLoadError(f"the {name} engine is not installed: {hint} ({exc})") from exc


def _lleaves(booster: Any, workdir: Path) -> Any:
    lleaves = _import("lleaves", "pip install lleaves==1.3.0 llvmlite==0.44.0")
    model_file = workdir / "model.txt"
    booster.save_model(str(model_file))
    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(workdir / "model.o"))

    def predict(x: F64, threads: int) -> F64:
        return np.asarray(model.predict(x, n_jobs=threads))

    return predict


def _tl2cgen(booster: Any, workdir: Path) -> Any:
    treelite = _import("treelite", "pip install treelite tl2cgen (and a C compiler, gcc)")
    tl2cgen = _import("tl2cgen", "pip install treelite tl2cgen (and a C compiler, gcc)")
    model_file = workdir / "model.txt"
    booster.save_model(str(model_file))
    model = treelite.frontend.load_lightgbm_model(str(model_file))
    lib = workdir / "model.so"
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 4})
    predictor = tl2cgen.Predictor(str(lib), nthread=2)

    def predict(x: F64, threads: int) -> F64:
        out = predictor.predict(tl2cgen.DMatrix(x, dtype="float64"))
        return np.asarray(out).reshape(len(x), -1)[:, -1]

    return predict


def compile_booster(booster: Any, engine: EngineName | Literal["auto"] = "auto", *, check: F64 | None = None,
                    threads: int = 2, k: int = 100, workdir: str | Path | None = None) -> CompiledBooster:
    """Compile ``booster`` with ``engine`` (``auto``: lleaves, else tl2cgen) and gate it against
    ``booster.predict`` on ``check`` (default: :func:`probe`). Raises :class:`EngineParityError` when the
    engine's scores differ, :class:`~kawa.errors.ModelLoadError` when no engine is installed."""
    where = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kawa-engine-"))
    where.mkdir(parents=True, exist_ok=True)
    order: list[str] = ["lleaves", "tl2cgen"] if engine == "auto" else [engine]
    errors: list[str] = []
    for name in order:
        try:
            fn = _lleaves(booster, where) if name == "lleaves" else _tl2cgen(booster, where)
        except ModelLoadError as exc:
            errors.append(str(exc))
            continue
        compiled = CompiledBooster(name, fn, int(booster.num_feature()), threads)
        x = probe(booster) if check is None else np.asarray(check, dtype=np.float64)
        reference = np.asarray(booster.predict(x, num_threads=threads))
        compiled.parity = gate(parity_report(name, reference, compiled.predict(x), k=k))
        return compiled
    raise ModelLoadError("no compiled engine could be built: " + "; ".join(errors))


def log_model(model: Any, *, name: str, input_example: Any = None) -> str:
    from kawa.ml.flavors import lightgbm as lgb_flavor

    return lgb_flavor.log_model(model, name=name, input_example=input_example)


def load(path: Path, conf: Mapping[str, Any]) -> LoadedModel:
    """Load an MLflow ``lightgbm`` model directory, compile it (lleaves, else tl2cgen) and gate it."""
    lightgbm = _import("lightgbm", "pip install 'kawa[lightgbm]'")

    data = conf.get("data")
    if data and "Booster" in str(conf.get("model_class", "Booster")) and (path / str(data)).is_file():
        booster = lightgbm.Booster(model_file=str(path / str(data)))  # a plain booster: no MLflow import needed
    else:
        import mlflow.lightgbm

        model = mlflow.lightgbm.load_model(str(path))
        booster = model if isinstance(model, lightgbm.Booster) else model.booster_
    compiled = compile_booster(booster)
    n = compiled.num_feature
    return LoadedModel(compiled.engine, compiled.predict, TensorSpec("input-0", np.dtype(np.float64), (n,)),
                       TensorSpec("output-0", np.dtype(np.float64), ()))
