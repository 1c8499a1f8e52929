"""Synthetic frontal chest radiographs with known labels and planted (fake) patient data.

A seeded generator draws a PA chest X-ray from anatomy-shaped layers — torso soft tissue, two lung fields
that the diaphragm domes cut from below, mediastinum and spine, the heart shadow, clavicles and ribs, vascular
texture — then varies patient anatomy, exposure, contrast and noise. A pneumonia case adds one to three
consolidations (soft, patchy opacities) of random size, density and lobe. A fake patient's name, ID, birth date
and study date are burned into a corner box (the scanner annotation every real pipeline must redact) and, for
DICOM, written into the header as well. Nothing is downloaded: the text uses Pillow's built-in font.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from kawa.apps.xray.settings import Box, ScannerProfile

Format = Literal["png", "jpeg", "dicom"]
FloatImage = NDArray[np.float32]


def f32(values: Any) -> FloatImage:
    """``values`` as a float32 array (and typed as one)."""
    return np.asarray(values, dtype=np.float32)


CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "application/dicom"}
EXTENSIONS: dict[str, str] = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}

# Distinctive fake names (none shorter than 6 letters) so a search for them in outputs has no false hits.
_GIVEN = (
    "ALBERTINE",
    "BARNABY",
    "CORDELIA",
    "DESMOND",
    "EVANGELINE",
    "FITZGERALD",
    "GWENDOLYN",
    "HORATIO",
    "ISADORA",
    "JOSEPHINE",
    "LEOPOLD",
    "MARGUERITE",
    "NATHANIEL",
    "OCTAVIA",
    "PERCIVAL",
    "ROSALIND",
)
_FAMILY = (
    "ABERNATHY",
    "BLACKWOOD",
    "CALLOWAY",
    "DUNSMORE",
    "ELLINGTON",
    "FAIRWEATHER",
    "GRIMSHAW",
    "HOLLOWAY",
    "INGLEWOOD",
    "JARDINE",
    "KILBRIDE",
    "LOCKHART",
    "MERRIWEATHER",
    "NORTHCOTT",
    "PEMBERTON",
    "QUINCEY",
    "ROCHEFORT",
    "SPRINGFIELD",
    "THORNBURY",
    "UNDERHILL",
    "VANDERMEER",
    "WHITAKER",
)


@dataclass(frozen=True)
class FakePatient:
    """Made-up patient data planted in an image. :meth:`phi_strings` lists every form it may leak in."""

    given_name: str
    family_name: str
    patient_id: str
    birth_date: date
    study_date: date
    sex: Literal["F", "M"]

    @property
    def dicom_name(self) -> str:
        return f"{self.family_name}^{self.given_name}"

    def burned_lines(self) -> list[str]:
        return [
            f"{self.family_name}, {self.given_name}",
            f"ID {self.patient_id}  {self.sex}",
            f"DOB {self.birth_date.isoformat()}",
            f"STUDY {self.study_date.isoformat()}",
        ]

    def phi_strings(self) -> list[str]:
        """Every planted value, in the spellings it is written with (text and DICOM forms)."""
        return [
            self.given_name,
            self.family_name,
            self.dicom_name,
            self.patient_id,
            self.birth_date.isoformat(),
            self.birth_date.strftime("%Y%m%d"),
            self.study_date.isoformat(),
            self.study_date.strftime("%Y%m%d"),
        ]


def fake_patient(rng: np.random.Generator) -> FakePatient:
    birth = date(1935, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 70)))
    study = date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 6)))
    return FakePatient(
        given_name=str(rng.choice(_GIVEN)),
        family_name=str(rng.choice(_FAMILY)),
        patient_id=f"KW{int(rng.integers(10_000_000, 99_999_999))}",
        birth_date=birth,
        study_date=study,
        sex="F" if rng.random() < 0.5 else "M",
    )


@dataclass(frozen=True)
class Radiograph:
    """One generated image: pixels in [0, 1] (1 = dense/bright) with the patient text burned in."""

    pixels: FloatImage
    pneumonia: bool
    patient: FakePatient
    uid_seed: int

    @property
    def label(self) -> int:
        return int(self.pneumonia)

    @property
    def class_name(self) -> str:
        return "PNEUMONIA" if self.pneumonia else "NORMAL"

    def encode(self, fmt: Format = "png") -> bytes:
        if fmt == "png":
            return self.png()
        if fmt == "jpeg":
            return self.jpeg()
        if fmt == "dicom":
            return self.dicom()
        raise ValueError(f"unknown image format {fmt!r}; use png, jpeg or dicom")

    def png(self) -> bytes:
        return _pil_bytes(self.pixels, "PNG", compress_level=1)

    def jpeg(self, quality: int = 90) -> bytes:
        return _pil_bytes(self.pixels, "JPEG", quality=quality)

    def dicom(self, modality: Literal["CR", "DX"] = "CR") -> bytes:
        from kawa.apps.xray.dicom import radiograph_dicom

        return radiograph_dicom(self, modality)


def _pil_bytes(pixels: FloatImage, fmt: str, **params: Any) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(out, fmt, **params)
    return out.getvalue()


class RadiographGenerator:
    """Seeded source of :class:`Radiograph`s: the same seed gives the same images, labels and patients.

    ``profile`` is the scanner that renders them (:meth:`switch_scanner` changes it mid-run). Its noise comes
    from a random stream of its own, so the anatomy, labels and patients of a seed are the same whichever
    scanner renders them, and the default profile gives the images this generator always gave."""

    def __init__(
        self,
        seed: int = 0,
        *,
        size: int = 256,
        phi_box: Box = (0.0, 0.84, 0.5, 1.0),
        pneumonia_fraction: float = 0.2,
        profile: ScannerProfile | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.size = size
        self.phi_box = phi_box
        self.pneumonia_fraction = pneumonia_fraction
        self.profile = profile or ScannerProfile()
        self._scanner_rng = np.random.default_rng([seed, 0x5CA7])
        self._count = 0

    def switch_scanner(self, profile: ScannerProfile) -> None:
        """Render every image from now on with ``profile`` (a new scanner in the department)."""
        self.profile = profile

    def generate(self, pneumonia: bool | None = None) -> Radiograph:
        rng = self.rng
        if pneumonia is None:
            pneumonia = bool(rng.random() < self.pneumonia_fraction)
        pixels = apply_scanner(render_chest(rng, self.size, pneumonia), self.profile, self._scanner_rng)
        patient = fake_patient(rng)
        pixels = burn_in_text(pixels, patient.burned_lines(), self.phi_box)
        self._count += 1
        return Radiograph(pixels, pneumonia, patient, uid_seed=self.seed * 1_000_003 + self._count)

    def batch(self, n: int, *, balanced: bool = False) -> list[Radiograph]:
        """``n`` images; ``balanced`` alternates the two classes instead of drawing the configured mix."""
        return [self.generate(bool(i % 2) if balanced else None) for i in range(n)]


# --- anatomy ---------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> FloatImage:
    """Band-limited noise: ``cells`` x ``cells`` random values interpolated to ``size`` (mean 0, sd ~1)."""
    from PIL import Image

    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    fine = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))
    return fine.astype(np.float32)


def _sigmoid(x: Any) -> FloatImage:
    return f32(1.0 / (1.0 + np.exp(-np.clip(x, -30, 30))))


def _ellipse(xx: FloatImage, yy: FloatImage, cx: float, cy: float, rx: float, ry: float, soft: float) -> FloatImage:
    """A soft ellipse mask: 1 inside, 0 outside, edge width ``soft`` (in radius units)."""
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return _sigmoid((1.0 - r) / soft)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[FloatImage, FloatImage]:
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return f32(xx), f32(yy)


def render_chest(rng: np.random.Generator, size: int, pneumonia: bool) -> FloatImage:
    """One radiograph without text, values in [0, 1]."""
    xx, yy = _grid(size)
    u = rng.uniform
    cx = 0.5 + u(-0.025, 0.025)
    cy = u(-0.02, 0.02)
    scale = u(0.9, 1.08)

    # Torso: wide soft tissue with the shoulders at the top corners.
    body = _ellipse(xx, yy, cx, 0.62 + cy, 0.56 * scale, 0.7, 0.06)
    img = 0.05 + 0.45 * body

    # Lung fields (wider at the base), cut from below by the diaphragm domes and medially by the heart.
    lung_y, lung_ry = 0.47 + cy, 0.33 * u(0.92, 1.06)
    offset = 0.19 * scale
    lungs = np.zeros_like(xx)
    t = np.clip((yy - (lung_y - lung_ry)) / (2 * lung_ry), 0.0, 1.0)
    for side in (-1.0, 1.0):
        lx = cx + side * offset
        rx = 0.165 * scale * u(0.93, 1.07) * (0.72 + 0.38 * t)
        r = np.sqrt(((xx - lx) / rx) ** 2 + ((yy - lung_y) / lung_ry) ** 2)
        lungs = np.maximum(lungs, _sigmoid((1.0 - r) / 0.07))
    dome_y = lung_y + lung_ry * u(0.66, 0.82)
    dome = dome_y - 0.05 * np.cos(np.clip((np.abs(xx - cx) - offset) / 0.16, -1.6, 1.6))
    below = _sigmoid((yy - dome) / 0.012)
    heart_cx, heart_r = cx + u(0.03, 0.07), u(0.12, 0.16) * scale
    heart = _ellipse(xx, yy, heart_cx, dome_y - 0.1, heart_r * 1.1, heart_r * 0.85, 0.12)
    lungs = lungs * (1.0 - below) * (1.0 - 0.95 * heart)
    vessels = 0.03 * _smooth_noise(rng, size, 28) * (1.0 - 0.4 * t)
    hilum = 0.06 * np.exp(-(((np.abs(xx - cx) - 0.08) / 0.06) ** 2 + ((yy - lung_y) / 0.12) ** 2))
    img = img - lungs * (0.32 - 0.05 * t) + lungs * (vessels + hilum)

    # Mediastinum and spine, the heart, the abdomen below the domes.
    img = img + 0.2 * np.exp(-(((xx - cx) / 0.05) ** 2)) * body
    img = img + 0.12 * heart + 0.1 * below * body

    # Clavicles and ribs: bright bands, clearer over the lungs.
    bones = np.zeros_like(xx)
    for side in (-1.0, 1.0):
        dx = side * (xx - cx)
        clav_y = 0.17 + cy - 0.15 * np.clip(dx, 0.0, 0.33) + 0.3 * np.clip(dx - 0.2, 0.0, None) ** 2
        bones += 1.3 * np.exp(-(((yy - clav_y) / 0.013) ** 2)) * _sigmoid((dx - 0.04) / 0.01) * (dx < 0.38)
        ribs = int(rng.integers(9, 12))
        spacing = (2 * lung_ry) / ribs
        top = lung_y - lung_ry + spacing * u(-0.3, 0.3)
        # Posterior ribs rise from the spine, then curve down along the chest wall: one periodic band
        # pattern (period = rib spacing) sheared by that curve, instead of one Gaussian per rib.
        along = (yy - top + 0.25 * dx - u(1.4, 1.9) * dx**2) / spacing
        phase = along - np.round(along)
        inside = (along > -0.5) & (along < ribs - 0.5) & (dx < 0.4)
        bones += np.exp(-((phase / 0.2) ** 2)) * _sigmoid((dx - 0.03) / 0.01) * inside
    img = img + bones * (0.015 + 0.045 * lungs) * body

    if rng.random() < 0.5:  # breast shadows (soft tissue over the lower lung fields)
        for side in (-1.0, 1.0):
            img = img + 0.06 * _ellipse(xx, yy, cx + side * 0.24, dome_y - 0.02, 0.16, 0.1, 0.3)

    if pneumonia:
        img = img + _opacities(rng, size, xx, yy, lungs)

    # Exposure, contrast, detector noise.
    img = (img - 0.3) * u(0.8, 1.25) + 0.3 + u(-0.06, 0.06)
    img = np.clip(img, 0.0, 1.0) ** u(0.8, 1.25)
    img = img + rng.normal(0.0, u(0.008, 0.025), img.shape).astype(np.float32)
    return f32(np.clip(img, 0.0, 1.0))


def _opacities(rng: np.random.Generator, size: int, xx: FloatImage, yy: FloatImage, lungs: FloatImage) -> FloatImage:
    """One to three consolidations inside the lung fields: patchy blobs of random size, density, lobe."""
    inside = np.argwhere(lungs > 0.85)
    if len(inside) == 0:
        inside = np.argwhere(lungs > 0.3)
    patch = _smooth_noise(rng, size, 20)
    out = np.zeros_like(xx)
    for _ in range(int(rng.choice([1, 1, 2, 3]))):
        row, col = inside[int(rng.integers(len(inside)))]
        oy, ox = (row + 0.5) / size, (col + 0.5) / size
        sx, sy = rng.uniform(0.03, 0.12), rng.uniform(0.03, 0.13)
        blob = np.exp(-0.5 * (((xx - ox) / sx) ** 2 + ((yy - oy) / sy) ** 2))
        density = rng.uniform(0.1, 0.32)
        out += density * blob * np.clip(0.75 + 0.35 * patch, 0.2, 1.4)
    return f32(out * np.clip(lungs * 1.3, 0.0, 1.0))


def apply_scanner(pixels: FloatImage, profile: ScannerProfile, rng: np.random.Generator) -> FloatImage:
    """``pixels`` as ``profile``'s scanner renders them: gain around 0.3 plus offset, clipped, tone curve, then
    detector noise (drawn from ``rng``), clipped to [0, 1]. The identity profile returns ``pixels`` untouched
    and draws nothing."""
    if profile.identity:
        return pixels
    img = np.clip((pixels - 0.3) * profile.contrast + 0.3 + profile.exposure, 0.0, 1.0) ** profile.gamma
    if profile.noise > 0:
        img = img + rng.normal(0.0, profile.noise, img.shape).astype(np.float32)
    return f32(np.clip(img, 0.0, 1.0))


# --- burned-in text --------------------------------------------------------------------------------


def burn_in_text(pixels: FloatImage, lines: list[str], box: Box) -> FloatImage:
    """Draw ``lines`` in white inside ``box`` (fractions of the image), as a scanner annotates an image."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = pixels.shape
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    bw, bh = max(1, x1 - x0), max(1, y1 - y0)  # never past the box: redaction must cover all of it
    font = ImageFont.load_default(size=24)
    line_h = 28
    width = max(int(font.getlength(s)) for s in lines)
    canvas = Image.new("L", (width + 16, line_h * len(lines) + 12), 0)
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(lines):
        draw.text((8, 6 + i * line_h), text, fill=255, font=font)
    # Fit the rendered block into the box with a small inner margin, keeping its aspect ratio.
    inner_w, inner_h = max(1, int(bw * 0.92)), max(1, int(bh * 0.86))
    ratio = min(inner_w / canvas.width, inner_h / canvas.height)
    block = canvas.resize(
        (max(1, int(canvas.width * ratio)), max(1, int(canvas.height * ratio))), Image.Resampling.LANCZOS
    )
    mask = np.zeros_like(pixels)
    ty, tx = y0 + (bh - block.height) // 2, x0 + (bw - block.width) // 10
    th, tw = min(block.height, h - ty), min(block.width, w - tx)
    mask[ty : ty + th, tx : tx + tw] = np.asarray(block, dtype=np.float32)[:th, :tw] / 255.0
    out = pixels.copy()
    out[ty : ty + th, tx : tx + tw] *= 0.08  # the dark label plate scanners print the text on
    return f32(np.maximum(out, mask * 0.98))
