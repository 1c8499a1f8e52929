"""The X-ray application's settings: buckets, topics, thresholds, where generated text goes, rates.

One frozen model, passed to the app's functions as their config (``ctx.config``) and read by the demo,
the generator and the trainer. Load it from YAML with :func:`load_settings`; nothing here reads the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kawa.errors import ConfigError

Box = tuple[float, float, float, float]
"""A region as fractions of the image: ``(x0, y0, x1, y1)``, origin top-left."""


class ScannerProfile(BaseModel):
    """How a scanner renders an image, on top of each image's own variation (patient, exposure, noise).

    Applied to each generated radiograph before its text is burned in: ``contrast`` is a gain around the
    mid-grey 0.3 (clipped to [0, 1], so a high gain saturates), ``exposure`` an offset, ``gamma`` the tone
    curve (``x ** gamma``) and ``noise`` the standard deviation of extra detector noise. The default profile
    changes nothing. The model standardizes each image, so a pure gain or offset alone hardly matters to it;
    the clipping, the tone curve and the noise do.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "scanner-a"
    contrast: float = Field(1.0, gt=0, le=4, description="gain around mid-grey 0.3, then clipped to [0, 1]")
    exposure: float = Field(0.0, ge=-0.5, le=0.5, description="offset added to every pixel")
    gamma: float = Field(1.0, gt=0, le=5, description="tone curve: pixel ** gamma")
    noise: float = Field(0.0, ge=0, le=0.5, description="sd of extra Gaussian detector noise")

    @property
    def identity(self) -> bool:
        """True when the profile changes no pixel (the generator then draws no extra random numbers)."""
        return self.contrast == 1.0 and self.exposure == 0.0 and self.gamma == 1.0 and self.noise == 0.0


SCANNER_B = ScannerProfile(name="scanner-b", contrast=0.7, exposure=0.03, gamma=2.2, noise=0.03)
"""The new scanner of the drift scenario: lower contrast, a darker tone curve, more noise. The model trained
on the old scanner loses 0.1-0.2 AUROC on its images; one retrained on them gets most of it back (docs/xray.md)."""


class XraySettings(BaseModel):
    """Everything the X-ray pipeline lets you change without touching code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    incoming_bucket: str = "xray-images"
    processed_bucket: str = "xray-images-processed"
    anonymized_bucket: str = "xray-images-anonymized"
    images_topic: str = "xray-images"
    results_topic: str = "xray-results"
    dead_letter_topic: str = "xray-images.dlq"
    deid_dead_letter_topic: str = "xray-deid.dlq"
    partitions: int = Field(4, ge=1, description="partitions of the images topic (bounds parallelism)")
    route_workers: int = Field(1, ge=1, le=16, description="parallel copies of the de-identification route")

    model_name: str = "pneumonia"
    model_alias: str = "champion"
    normal_below: float = Field(0.60, gt=0, lt=1, description="risk < this → Normal")
    pneumonia_from: float = Field(0.80, gt=0, lt=1, description="risk >= this → Pneumonia; between: Unsure")

    phi_box: Box = Field(
        (0.0, 0.84, 0.5, 1.0),
        description="where the generator burns its fake patient text in (redaction finds text wherever it is)",
    )
    redact_margin: float = Field(0.01, ge=0, le=0.1, description="extra border of redaction_box() around phi_box")
    redact_margin_px: int = Field(2, ge=0, le=64, description="pixels blanked around each detected text region")
    model_input_size: int = Field(32, ge=8, le=256, description="side of the downsampled image the model reads")

    results_db: str | None = Field(
        None, description="SQLAlchemy URL of the results DB; default sqlite:///<home>/xray/results.db"
    )

    image_size: int = Field(256, ge=64, le=2048, description="side of generated images in pixels")
    rate: float = Field(20.0, gt=0, description="generator: images uploaded per second")
    pneumonia_fraction: float = Field(0.2, ge=0, le=1, description="generator: share of pneumonia images")
    dicom_fraction: float = Field(0.25, ge=0, le=1, description="generator: share uploaded as DICOM")
    corrupt_fraction: float = Field(
        0.0, ge=0, le=1, description="generator: share of damaged uploads (to show the dead-letter path)"
    )
    seed: int = 7
    scanner: ScannerProfile = Field(ScannerProfile(), description="generator: the scanner profile it starts with")
    shifted_scanner: ScannerProfile = Field(SCANNER_B, description="generator: the profile it switches to")
    scanner_shift_after: int | None = Field(
        None, ge=0, description="generator: switch to shifted_scanner after this many uploads (None: never)"
    )

    record_decisions: bool = Field(True, description="record a kawa.monitor.decision for each assessed image")
    reads_delay_s: float = Field(60.0, ge=0, description="radiologist reads: mean seconds from upload to read")
    reads_jitter: float = Field(
        0.5, ge=0, le=1, description="radiologist reads: delay drawn uniformly in delay * (1 ± jitter)"
    )
    reads_coverage: float = Field(0.8, ge=0, le=1, description="radiologist reads: share of images read")

    train_images: int = Field(1200, ge=100, description="trainer: generated images to train and test on")

    @model_validator(mode="after")
    def _check(self) -> XraySettings:
        if self.normal_below > self.pneumonia_from:
            raise ValueError("normal_below must be <= pneumonia_from (Normal < normal_below <= Unsure < ...)")
        x0, y0, x1, y1 = self.phi_box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError("phi_box must be (x0, y0, x1, y1) fractions with 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1")
        return self

    @property
    def model_ref(self) -> str:
        return f"{self.model_name}@{self.model_alias}"

    def label_for(self, risk: float) -> str:
        """Normal < ``normal_below`` <= Unsure < ``pneumonia_from`` <= Pneumonia."""
        if risk < self.normal_below:
            return "Normal"
        if risk < self.pneumonia_from:
            return "Unsure"
        return "Pneumonia"

    def redaction_box(self) -> Box:
        """``phi_box`` grown by ``redact_margin`` on every side, clipped to the image: the generator's text
        area (tests and rules use it; the pipeline and the route redact the text they detect instead)."""
        m = self.redact_margin
        x0, y0, x1, y1 = self.phi_box
        return (max(0.0, x0 - m), max(0.0, y0 - m), min(1.0, x1 + m), min(1.0, y1 + m))

    def results_url(self, home: Path) -> str:
        if self.results_db:
            return self.results_db
        return f"sqlite:///{(Path(home).absolute() / 'xray' / 'results.db')}"

    def buckets(self) -> tuple[str, str, str]:
        return (self.incoming_bucket, self.processed_bucket, self.anonymized_bucket)


def load_settings(path: str | Path | None = None, **overrides: Any) -> XraySettings:
    """Settings from a YAML file (a mapping of the fields above, or under a top-level ``xray:`` key)
    with ``overrides`` applied last."""
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"X-ray settings file {file} does not exist; pass an existing YAML file")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file} must hold a mapping of X-ray settings")
        data = dict(loaded.get("xray", loaded))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return XraySettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid X-ray settings:\n{exc}") from exc
