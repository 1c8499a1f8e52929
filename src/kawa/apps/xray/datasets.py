"""Bring your own images: read datasets in the common ``train|test/NORMAL|PNEUMONIA/`` layout (the
Kaggle "Chest X-Ray Images (Pneumonia)" set uses it) and plain DICOM folders; write generated ones the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kawa.apps.xray.imaging import UndecodableImage, decode
from kawa.apps.xray.synth import EXTENSIONS, Format, RadiographGenerator
from kawa.errors import KawaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}
SPLITS = {"train", "test", "val"}


@dataclass(frozen=True)
class DatasetItem:
    """One image file; ``label`` 1 = pneumonia, 0 = normal, None = unlabeled (e.g. a bare DICOM folder)."""

    path: Path
    label: int | None
    split: str | None


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:  # DICOM files often have no extension: check the preamble magic
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def scan_dataset(root: str | Path) -> list[DatasetItem]:
    """Every image under ``root`` in path order, labeled by the nearest ``NORMAL``/``PNEUMONIA`` folder
    (any case) and split by the nearest ``train``/``test``/``val`` folder."""
    base = Path(root)
    if not base.is_dir():
        raise KawaError(
            f"dataset folder {base} does not exist; pass a folder with train/test/NORMAL|PNEUMONIA "
            "subfolders or one holding DICOM files"
        )
    items = []
    for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if not _looks_like_image(path):
            continue
        parts = [part for part in path.relative_to(base).parts[:-1]]
        label = next((CLASSES[p.upper()] for p in reversed(parts) if p.upper() in CLASSES), None)
        split = next((p.lower() for p in reversed(parts) if p.lower() in SPLITS), None)
        items.append(DatasetItem(path, label, split))
    return items


def load_dataset(
    root: str | Path, *, split: str | None = None, labeled_only: bool = True, skip_bad: bool = True
) -> Iterator[tuple[DatasetItem, np.ndarray]]:
    """Decoded pixels of each image (see :func:`scan_dataset`); damaged files are skipped unless
    ``skip_bad`` is False."""
    for item in scan_dataset(root):
        if split is not None and item.split != split:
            continue
        if labeled_only and item.label is None:
            continue
        try:
            pixels = decode(item.path.read_bytes())
        except UndecodableImage:
            if skip_bad:
                continue
            raise
        yield item, pixels


def write_dataset(
    root: str | Path,
    *,
    train: int = 200,
    test: int = 50,
    seed: int = 0,
    size: int = 256,
    fmt: Format = "png",
    pneumonia_fraction: float = 0.5,
) -> list[DatasetItem]:
    """Generate a dataset in the ``train|test/NORMAL|PNEUMONIA/`` layout; returns what it wrote."""
    gen = RadiographGenerator(seed, size=size, pneumonia_fraction=pneumonia_fraction)
    out = []
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            image = gen.generate()
            folder = Path(root, split, image.class_name)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{split}-{i:05d}{EXTENSIONS[fmt]}"
            path.write_bytes(image.encode(fmt))
            out.append(DatasetItem(path, image.label, split))
    return out
