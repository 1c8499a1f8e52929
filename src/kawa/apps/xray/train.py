"""Train the pneumonia classifier: ``kawa jobs submit kawa.apps.xray.train:train``.

On generated radiographs (or a real dataset folder, see :mod:`kawa.apps.xray.datasets`) it fits a
standardize + logistic-regression pipeline on the downsampled image (:func:`kawa.apps.xray.imaging.model_input`),
reports held-out AUC, sensitivity and specificity to MLflow, exports the pipeline to ONNX (served by
onnxruntime), registers it and points ``champion`` at it when the model has none yet. CPU only, well under a
minute for the default 1,200 images.

Sensitivity and specificity are taken at the app's first threshold (``normal_below``): a pneumonia image
counts as caught when it is *not* labeled Normal (Unsure goes to a radiologist), a normal one when it is.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from kawa.apps.xray.features import SNAPSHOT, summarize
from kawa.apps.xray.imaging import model_input, redact_text
from kawa.apps.xray.settings import ScannerProfile, XraySettings, load_settings
from kawa.apps.xray.synth import RadiographGenerator
from kawa.errors import KawaError

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.monitor.sketch import Profile

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``."""


def job_progress(stage: str, done: int, total: int) -> None:
    """Progress on the job's progress channel (``kawa demo xray`` and the portal read it); a no-op when
    :func:`train` runs outside a job."""
    from kawa.ml import jobs

    jobs.progress(done, total, message=stage)


@dataclass(frozen=True)
class TrainData:
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    source: str
    trained_on: str  # what the model learns from, in words: recorded as the lineage description
    summaries: tuple[dict[str, float], ...] = ()  # image summaries, when the images are a sample of live data


def generated_data(
    settings: XraySettings, n: int, seed: int, progress: Progress | None = None, scanner: ScannerProfile | None = None
) -> TrainData:
    """``n`` balanced generated images, redacted as the pipeline redacts them, as model inputs; rendered by
    ``scanner`` (default: ``settings.scanner``, the generator's first scanner)."""
    profile = scanner or settings.scanner
    gen = RadiographGenerator(seed, size=settings.image_size, phi_box=settings.phi_box, profile=profile)
    xs, ys = [], []
    for i in range(n):
        image = gen.generate(pneumonia=bool(i % 2))
        xs.append(model_input(redact_text(image.pixels, settings.redact_margin_px), settings.model_input_size))
        ys.append(image.label)
        if progress is not None and (i % 50 == 49 or i == n - 1):
            progress("generating", i + 1, n)
    if profile.identity:
        return TrainData(
            np.stack(xs), np.asarray(ys, dtype=np.int64), f"generated:seed={seed},n={n}", "generated images"
        )
    return TrainData(
        np.stack(xs),
        np.asarray(ys, dtype=np.int64),
        f"generated:seed={seed},n={n},scanner={profile.name}",
        f"generated images ({profile.name})",
    )


def window_data(
    settings: XraySettings, store: Any, labels: Mapping[str, int], progress: Progress | None = None
) -> TrainData:
    """The recent labelled window: the images ``labels`` names (``bucket/key`` → 0/1, e.g. the radiologist reads
    of :mod:`kawa.apps.xray.reads`) read back from ``store`` (an :class:`~kawa.store.ObjectStore`), decoded and
    redacted as the pipeline does. An image that is gone or undecodable is skipped; both classes must remain."""
    from kawa.apps.xray.imaging import UndecodableImage, decode
    from kawa.errors import ObjectNotFound

    xs, ys, summaries = [], [], []
    for i, (entity, label) in enumerate(sorted(labels.items())):
        bucket, _, key = entity.partition("/")
        try:
            with store.get(bucket, key) as body:
                pixels = decode(body.read())
        except (ObjectNotFound, UndecodableImage):
            continue
        clean = redact_text(pixels, settings.redact_margin_px)
        xs.append(model_input(clean, settings.model_input_size))
        summaries.append(summarize(clean, settings.model_input_size).features())
        ys.append(int(label))
        if progress is not None and (i % 50 == 49 or i == len(labels) - 1):
            progress("reading", i + 1, len(labels))
    if len(set(ys)) < 2:
        raise KawaError(
            f"the labelled window holds {len(ys)} readable images of one class only; wait for more outcomes "
            "(both normal and pneumonia reads) before retraining"
        )
    first, last = (sorted(labels)[0], sorted(labels)[-1]) if labels else ("", "")
    return TrainData(
        np.stack(xs),
        np.asarray(ys, dtype=np.int64),
        f"window:n={len(ys)},first={first},last={last}",
        "the recent labelled window",
        tuple(summaries),
    )


def reference_sample(
    settings: XraySettings, n: int, seed: int, scanner: ScannerProfile | None = None
) -> tuple[NDArray[np.float32], list[dict[str, float]]]:
    """``n`` generated images in the *live* mix (``settings.pneumonia_fraction``, not the balanced training
    mix, so the reference scores look like the served ones): their model inputs and image summaries."""
    gen = RadiographGenerator(
        seed,
        size=settings.image_size,
        phi_box=settings.phi_box,
        pneumonia_fraction=settings.pneumonia_fraction,
        profile=scanner or settings.scanner,
    )
    xs, summaries = [], []
    for _ in range(n):
        pixels = redact_text(gen.generate().pixels, settings.redact_margin_px)
        xs.append(model_input(pixels, settings.model_input_size))
        summaries.append(summarize(pixels, settings.model_input_size).features())
    return np.stack(xs), summaries


def reference_profile(summaries: Sequence[Mapping[str, float]], scores: Sequence[float] | NDArray[Any]) -> Profile:
    """The monitoring reference of a model version: every recorded summary feature
    (:data:`~kawa.apps.xray.features.SNAPSHOT`) and the score, in quantile bins (:func:`kawa.monitor.build_profile`)."""
    from kawa.monitor.sketch import build_profile

    columns = {name: [float(s[name]) for s in summaries] for name in SNAPSHOT.recorded}
    return build_profile(columns, score=[float(x) for x in scores])


def folder_data(settings: XraySettings, root: str, progress: Progress | None = None) -> TrainData:
    from kawa.apps.xray.datasets import load_dataset

    xs, ys = [], []
    for item, pixels in load_dataset(root):
        xs.append(model_input(redact_text(pixels, settings.redact_margin_px), settings.model_input_size))
        ys.append(int(item.label or 0))
        if progress is not None and len(xs) % 50 == 0:
            progress("loading", len(xs), len(xs))
    if len(set(ys)) < 2:
        raise KawaError(f"dataset {root} needs both NORMAL and PNEUMONIA images to train on")
    return TrainData(
        np.stack(xs), np.asarray(ys, dtype=np.int64), f"folder:{root}", f"images of the folder {Path(root).name}"
    )


def fit(x: NDArray[np.float32], y: NDArray[np.int64], *, c: float = 0.05, seed: int = 0) -> Any:
    """The classifier: standardize, then L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed))
    model.fit(x, y)
    return model


def evaluate(risk: NDArray[np.floating[Any]], y: NDArray[np.int64], settings: XraySettings) -> dict[str, float]:
    """Held-out AUC, and sensitivity / specificity at ``normal_below``."""
    from sklearn.metrics import roc_auc_score

    flagged = risk >= settings.normal_below
    positives, negatives = y == 1, y == 0
    return {
        "auc": float(roc_auc_score(y, risk)),
        "sensitivity": float(flagged[positives].mean()) if positives.any() else float("nan"),
        "specificity": float((~flagged[negatives]).mean()) if negatives.any() else float("nan"),
        "accuracy": float(((risk >= 0.5) == positives).mean()),
    }


def to_onnx(model: Any, n_features: int) -> bytes:
    """The fitted pipeline as a one-output ONNX model: input ``input`` float32 [N, F] → output ``risk``
    float32 [N] = P(pneumonia). (skl2onnx makes ``label`` and ``probabilities``; a Gather picks column 1 and
    becomes the only graph output, so any single-output ONNX server returns the risk.)"""
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    proto = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    graph = proto.graph
    graph.initializer.append(helper.make_tensor("pneumonia_column", TensorProto.INT64, [], [1]))
    graph.node.append(helper.make_node("Gather", ["probabilities", "pneumonia_column"], ["risk"], axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("risk", TensorProto.FLOAT, [None]))
    return bytes(proto.SerializeToString())


def onnx_risk(onnx_bytes: bytes, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """P(pneumonia) from the exported model through onnxruntime (checks the export matches)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["risk"], {"input": x})[0], dtype=np.float32)


def train(
    images: int | None = None,
    seed: int | None = None,
    dataset: str | None = None,
    settings_file: str | None = None,
    promote: Literal["if-none", "always", "never"] = "if-none",
    shuffle_labels: bool = False,
    shifted_scanner: bool = False,
    reference_images: int | None = None,
    window: Mapping[str, int] | None = None,
    register: bool = True,
    config: KawaConfig | None = None,
    progress: Progress | None = job_progress,
) -> dict[str, Any]:
    """Train, evaluate on a held-out quarter, log to MLflow, register as ``settings.model_name`` and
    (``promote``) set ``settings.model_alias`` on it. Returns the metrics, the version and whether it was
    promoted. ``shuffle_labels`` trains on permuted labels — a deliberately broken model for tests;
    ``shifted_scanner`` trains on generated images of ``settings.shifted_scanner`` (the drift scenario's new
    scanner) instead of ``settings.scanner``; ``window`` (``bucket/key`` → label) trains on those images read
    from the configured store instead (:func:`window_data`: the loop's retraining on the recent labelled
    window), and takes the reference profile from its held-out quarter. On generated data it also builds the
    version's monitoring reference profile from ``reference_images`` (default: a quarter of ``images``, 50 to
    200) further images in the live mix, scored by the exported model
    (:func:`reference_profile`), and logs it with the run when the monitoring service's
    ``kawa.monitor.profiles.log_reference_profile`` is installed."""
    started = time.perf_counter()
    settings = load_settings(settings_file)
    n = images or settings.train_images
    seed = settings.seed if seed is None else seed
    scanner = settings.shifted_scanner if shifted_scanner else None
    if window is not None:
        from kawa.backends import open_backends

        with open_backends(config) as backends:
            data = window_data(settings, backends.store, window, progress)
    elif dataset:
        data = folder_data(settings, dataset, progress)
    else:
        data = generated_data(settings, n, seed, progress, scanner)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y))
    cut = int(len(order) * 0.75)
    train_idx, test_idx = order[:cut], order[cut:]
    y_train = data.y[train_idx]
    if shuffle_labels:
        y_train = rng.permutation(y_train)
    if progress is not None:
        progress("fitting", 0, 1)
    model = fit(data.x[train_idx], y_train, seed=seed)
    onnx_bytes = to_onnx(model, data.x.shape[1])
    risk = onnx_risk(onnx_bytes, data.x[test_idx])
    metrics = evaluate(risk, data.y[test_idx], settings)
    if progress is not None:
        progress("fitting", 1, 1)
    profile = None
    n_reference = max(50, min(200, n // 4)) if reference_images is None else reference_images
    if data.summaries:  # the held-out quarter is a sample of the live stream
        profile = reference_profile([data.summaries[i] for i in test_idx], risk)
    elif not dataset and n_reference > 0:
        ref_x, summaries = reference_sample(settings, n_reference, seed + 7919, scanner)
        profile = reference_profile(summaries, onnx_risk(onnx_bytes, ref_x))
    result: dict[str, Any] = {**metrics, "train_images": int(cut), "test_images": len(test_idx)}
    result["reference_records"] = profile.n if profile is not None else 0
    if register:
        result.update(_track(settings, config, onnx_bytes, data, metrics, seed, shuffle_labels, promote, profile))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _track(
    settings: XraySettings,
    config: KawaConfig | None,
    onnx_bytes: bytes,
    data: TrainData,
    metrics: dict[str, float],
    seed: int,
    shuffled: bool,
    promote: str,
    profile: Profile | None = None,
) -> dict[str, Any]:
    from kawa.backends import open_backends
    from kawa.ml import tracking
    from kawa.ml.registry import Registry

    params = {
        "model": "standardize+logistic_regression",
        "input_size": settings.model_input_size,
        "image_size": settings.image_size,
        "seed": seed,
        "data": data.source,
        "shuffled_labels": shuffled,
        "images": len(data.y),
    }
    # The backends opened here (from the job's configuration) publish the alias move to running pipelines.
    with open_backends(config) as backends:
        with tracking.run("xray-pneumonia", run_name="pneumonia-logreg", params=params, config=backends.config) as run:
            # Lineage is copied onto the registered version; the pipeline shows its description on each image.
            run.log_lineage(source=data.source, description=data.trained_on)
            run.log_metrics(metrics)
            if profile is not None:
                _log_profile(run, profile)
            version = run.log_model(onnx_bytes, flavor="onnx", register_as=settings.model_name)
            run_id = run.run_id
        out: dict[str, Any] = {"model": settings.model_name, "version": version, "run_id": run_id, "promoted": False}
        if version is None:
            return out
        registry = Registry(backends)
        try:
            current = registry.alias_target(settings.model_name, settings.model_alias)
            if promote == "always" or (promote == "if-none" and current is None):
                registry.promote(settings.model_name, version, settings.model_alias)
                out["promoted"] = True
        finally:
            registry.close()
    return out


def _log_profile(run: Any, profile: Profile) -> None:
    """Log ``profile`` with ``run`` through the monitoring service's ``log_reference_profile`` (issue 13), looked
    up at run time: a build without the service trains without logging it."""
    try:
        profiles = importlib.import_module("kawa.monitor.profiles")
    except ModuleNotFoundError as exc:
        if exc.name != "kawa.monitor.profiles":
            raise
        return
    profiles.log_reference_profile(run, profile)
