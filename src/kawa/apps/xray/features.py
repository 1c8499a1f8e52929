"""The image summary that the X-ray app records with each decision: what monitoring compares over time.

An image is not a row of tabular inputs, so the app declares a small numeric summary of what the model
reads — the redacted image area-averaged to the model's input size (``model_input_size``², values in [0, 1]),
before the per-image standardization of :func:`kawa.apps.xray.imaging.model_input`:

- ``hist_0`` … ``hist_7``: the intensity histogram, as shares of the input's pixels in 8 equal bins of [0, 1];
- ``mean``, ``std``, ``p5``, ``p95`` and ``contrast`` (``p95 - p5``) of those pixels;
- ``width``, ``height``: the decoded image's size in pixels (a new scanner often has another detector);
- ``emb_0`` … ``emb_3``: a tiny fixed "embedding", the standardized model input projected on 4 random
  directions drawn once from a fixed seed (:data:`EMBEDDING_SEED`): the same image gives the same numbers in
  every process and every version of the app, so a live window compares with the training reference.

None of it is PHI: the burned-in text is redacted before the summary is taken, and a few aggregate numbers
cannot show a face or a name. :data:`SNAPSHOT` declares them all numeric and none PHI. The summary costs about
0.05-0.08 ms per image at the 32² input, 0.25 ms with the downsampling from 256² (measured in docs/xray.md):
under the 1 ms budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kawa.apps.xray.imaging import downsample
from kawa.monitor.records import SnapshotSpec

__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_SEED",
    "FEATURES",
    "HIST_BINS",
    "SNAPSHOT",
    "ImageSummary",
    "projection",
    "summarize",
    "summarize_input",
]

HIST_BINS = 8
EMBEDDING_DIM = 4
EMBEDDING_SEED = 20261202
"""Seed of the embedding's projection matrix; changing it makes every recorded embedding incomparable."""

FEATURES: tuple[str, ...] = (
    "mean",
    "std",
    "p5",
    "p95",
    "contrast",
    "width",
    "height",
    *(f"hist_{i}" for i in range(HIST_BINS)),
    *(f"emb_{i}" for i in range(EMBEDDING_DIM)),
)
SNAPSHOT = SnapshotSpec.of(numeric=FEATURES)
"""The X-ray app's declaration of what a decision record keeps: the summary above, all numeric, none PHI."""


@dataclass(frozen=True)
class ImageSummary:
    """The summary of one model input (see the module docstring); :meth:`features` is the snapshot mapping."""

    mean: float
    std: float
    p5: float
    p95: float
    width: int
    height: int
    histogram: tuple[float, ...]
    embedding: tuple[float, ...]

    @property
    def contrast(self) -> float:
        return self.p95 - self.p5

    def features(self) -> dict[str, float]:
        out = {
            "mean": self.mean,
            "std": self.std,
            "p5": self.p5,
            "p95": self.p95,
            "contrast": self.contrast,
            "width": float(self.width),
            "height": float(self.height),
        }
        out.update({f"hist_{i}": share for i, share in enumerate(self.histogram)})
        out.update({f"emb_{i}": value for i, value in enumerate(self.embedding)})
        return out


@lru_cache(maxsize=8)
def projection(n: int) -> NDArray[np.float64]:
    """The fixed ``EMBEDDING_DIM`` x ``n`` projection: standard normal entries from :data:`EMBEDDING_SEED`,
    scaled by ``1/sqrt(n)`` so a standardized input gives values of order 1. Read-only (it is cached)."""
    matrix: NDArray[np.float64] = np.random.default_rng(EMBEDDING_SEED).standard_normal((EMBEDDING_DIM, n)) / np.sqrt(n)
    matrix.setflags(write=False)
    return matrix


def summarize_input(small: NDArray[Any], width: int, height: int) -> ImageSummary:
    """The summary of ``small``, the image already area-averaged to the model's input size (values in [0, 1];
    values outside are counted in the first or last histogram bin), taken from an image ``width`` x
    ``height`` pixels."""
    x = np.asarray(small, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("an image summary needs at least one pixel")
    bins = np.clip((x * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
    histogram = np.bincount(bins, minlength=HIST_BINS) / x.size
    p5, p95 = _quantiles(x, (0.05, 0.95))
    mean, sd = float(x.mean()), float(x.std())
    z = (x - mean) / (sd if sd > 1e-6 else 1.0)  # the standardization model_input applies
    embedding = projection(x.size) @ z
    return ImageSummary(
        mean=mean,
        std=sd,
        p5=float(p5),
        p95=float(p95),
        width=int(width),
        height=int(height),
        histogram=tuple(float(h) for h in histogram),
        embedding=tuple(float(e) for e in embedding),
    )


def _quantiles(x: NDArray[np.float64], qs: tuple[float, ...]) -> list[float]:
    """``np.quantile(x, qs)`` (its default, linear interpolation) from one partial sort: 4x cheaper here."""
    n = x.size
    at = [(n - 1) * q for q in qs]
    lows = [int(np.floor(h)) for h in at]
    kth = sorted({i for lo in lows for i in (lo, min(lo + 1, n - 1))})
    part = np.partition(x, kth)
    return [float(part[lo] + (h - lo) * (part[min(lo + 1, n - 1)] - part[lo])) for h, lo in zip(at, lows, strict=True)]


def summarize(pixels: NDArray[Any], input_size: int) -> ImageSummary:
    """The summary of the model input of ``pixels`` (the redacted image, values in [0, 1]) at ``input_size``."""
    h, w = pixels.shape[:2]
    return summarize_input(downsample(pixels, input_size), w, h)
