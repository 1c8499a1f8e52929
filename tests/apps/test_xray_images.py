"""Synthetic radiographs, decoding, redaction and the dataset loader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kawa.apps.xray.datasets import load_dataset, scan_dataset, write_dataset
from kawa.apps.xray.imaging import (
    UndecodableImage,
    annotate,
    box_pixels,
    decode,
    encode_png,
    model_input,
    redact,
)
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.synth import RadiographGenerator, burn_in_text, render_chest

SETTINGS = XraySettings()


def test_same_seed_same_images_labels_and_patients() -> None:
    a = RadiographGenerator(5, size=128).batch(4)
    b = RadiographGenerator(5, size=128).batch(4)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.pixels, y.pixels)
        assert (x.pneumonia, x.patient) == (y.pneumonia, y.patient)
    assert not np.array_equal(a[0].pixels, RadiographGenerator(6, size=128).generate().pixels)


def test_mix_follows_pneumonia_fraction() -> None:
    images = RadiographGenerator(1, size=64, pneumonia_fraction=0.2).batch(300)
    share = sum(i.pneumonia for i in images) / len(images)
    assert 0.13 < share < 0.27


def test_anatomy_is_plausible() -> None:
    """Lungs (air) darker than the mediastinum and the abdomen under the diaphragm; values in [0, 1]."""
    pixels = render_chest(np.random.default_rng(0), 256, pneumonia=False)
    assert pixels.dtype == np.float32 and pixels.min() >= 0.0 and pixels.max() <= 1.0
    lung = pixels[90:150, 50:90].mean()  # patient's right lung field
    mediastinum = pixels[90:150, 122:134].mean()
    abdomen = pixels[225:240, 100:156].mean()
    assert lung + 0.1 < mediastinum and lung + 0.1 < abdomen


def test_pneumonia_adds_opacity_inside_the_lungs() -> None:
    normal = render_chest(np.random.default_rng(3), 256, pneumonia=False)
    sick = render_chest(np.random.default_rng(3), 256, pneumonia=True)
    diff = sick - normal
    # The same draws up to the opacities: the difference is the added density (plus different noise).
    assert diff.max() > 0.08
    ys, xs = np.nonzero(diff > 0.05)
    assert len(ys) > 20 and 40 < ys.mean() < 220 and 30 < xs.mean() < 226


def test_text_is_burned_only_inside_the_phi_box() -> None:
    pixels = render_chest(np.random.default_rng(1), 256, pneumonia=False)
    burned = burn_in_text(pixels, ["ABERNATHY, HORATIO", "ID KW12345678"], SETTINGS.phi_box)
    x0, y0, x1, y1 = box_pixels(pixels.shape, SETTINGS.phi_box)
    changed = np.argwhere(burned != pixels)
    assert len(changed) > 200
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    assert (burned[y0:y1, x0:x1] > 0.9).sum() > 50  # white glyphs


@pytest.mark.parametrize("fmt", ["png", "jpeg", "dicom"])
def test_encode_decode_round_trip(fmt: str) -> None:
    image = RadiographGenerator(2, size=128).generate()
    pixels = decode(image.encode(fmt))  # type: ignore[arg-type]
    assert pixels.shape == (128, 128) and pixels.dtype == np.float32
    tolerance = {"png": 1 / 255, "jpeg": 0.1, "dicom": 1 / 4095}[fmt]
    assert np.abs(pixels - image.pixels).mean() < tolerance


def test_dicom_carries_the_patient_in_its_header() -> None:
    image = RadiographGenerator(4, size=64).generate()
    ds = pydicom.dcmread(io.BytesIO(image.dicom("DX")))
    p = image.patient
    assert str(ds.PatientName) == p.dicom_name and ds.PatientID == p.patient_id
    assert ds.PatientBirthDate == p.birth_date.strftime("%Y%m%d") and ds.StudyDate == p.study_date.strftime("%Y%m%d")
    assert ds.Modality == "DX" and ds.BurnedInAnnotation == "YES"


def test_monochrome1_dicom_is_inverted() -> None:
    image = RadiographGenerator(4, size=64).generate()
    ds = pydicom.dcmread(io.BytesIO(image.dicom()))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (4095 - ds.pixel_array).astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert np.abs(decode(out.getvalue()) - image.pixels).max() < 1e-3


def _truncated_dicom() -> tuple[bytes, list[str]]:
    image = RadiographGenerator(9, size=64).generate()
    data = image.dicom()
    return data[: len(data) - 3000], image.patient.phi_strings()


@pytest.mark.parametrize(
    "payload",
    [b"", b"hello, I am not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "truncated-png", "truncated-dicom"],
)
def test_undecodable_uploads_fail_with_a_phi_free_reason(payload: bytes | str) -> None:
    phi: list[str] = []
    if payload == "truncated-png":
        payload = RadiographGenerator(8, size=64).generate().png()[:300]
    elif payload == "truncated-dicom":
        payload, phi = _truncated_dicom()
    assert isinstance(payload, bytes)
    with pytest.raises(UndecodableImage) as caught:
        decode(payload)
    reason = str(caught.value)
    assert reason and caught.value.__cause__ is None
    for value in phi:
        assert value.lower() not in reason.lower()


def test_redaction_blanks_the_box_and_only_the_box() -> None:
    image = RadiographGenerator(3, size=256).generate()
    box = SETTINGS.redaction_box()
    clean = redact(image.pixels, box)
    x0, y0, x1, y1 = box_pixels(clean.shape, box)
    assert not clean[y0:y1, x0:x1].any()
    outside = np.ones(clean.shape, dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(clean[outside], image.pixels[outside])


def test_annotated_png_has_the_label_and_no_text_chunks() -> None:
    from PIL import Image

    image = RadiographGenerator(3, size=256).generate()
    png = encode_png(annotate(redact(image.pixels, SETTINGS.redaction_box()), "Unsure", 0.71))
    opened = Image.open(io.BytesIO(png))
    assert opened.mode == "L" and opened.size == (256, 256) and not opened.info.get("text")
    top_left = np.asarray(opened)[:12, :80]
    assert (top_left > 200).sum() > 20 and (top_left < 30).sum() > 200  # white text on a dark plate


def test_model_input_is_standardized_and_exposure_invariant() -> None:
    image = RadiographGenerator(3, size=256).generate()
    x = model_input(image.pixels, 32)
    assert x.shape == (1024,) and abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    brighter = np.clip(image.pixels * 0.8 + 0.1, 0, 1)
    assert np.allclose(model_input(brighter, 32), x, atol=1e-3)


def test_dataset_layout_round_trip(tmp_path: Path) -> None:
    written = write_dataset(tmp_path / "ds", train=6, test=4, size=64, seed=1)
    items = scan_dataset(tmp_path / "ds")
    assert sorted(i.path for i in items) == sorted(i.path for i in written)
    by_path = {i.path: i for i in written}
    for item in items:
        assert item.label == by_path[item.path].label and item.split == by_path[item.path].split
        assert item.path.parent.name == ("PNEUMONIA" if item.label else "NORMAL")
    assert len(list(load_dataset(tmp_path / "ds", split="test"))) == 4


def test_dicom_folder_without_extensions_is_found(tmp_path: Path) -> None:
    gen = RadiographGenerator(2, size=64)
    for i in range(3):
        (tmp_path / f"IM{i:04d}").write_bytes(gen.generate().dicom())
    (tmp_path / "README").write_text("not an image")
    items = scan_dataset(tmp_path)
    assert len(items) == 3 and all(i.label is None for i in items)
    assert len(list(load_dataset(tmp_path, labeled_only=False))) == 3


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.sampled_from([64, 100, 128, 200]),
    x0=st.floats(0.0, 0.5),
    y0=st.floats(0.0, 0.8),
    width=st.floats(0.2, 0.5),
    height=st.floats(0.1, 0.2),
)
def test_redaction_removes_everything_the_burn_in_added(
    seed: int, size: int, x0: float, y0: float, width: float, height: float
) -> None:
    """For any box, seed and size (multiples of the model grid or not): redacting the configured box of the
    annotated image gives exactly the redacted clean image — no trace of the text survives."""
    box = (x0, y0, min(1.0, x0 + width), min(1.0, y0 + height))
    s = XraySettings(phi_box=box)
    clean = render_chest(np.random.default_rng(seed), size, pneumonia=bool(seed % 2))
    burned = burn_in_text(clean, ["ABERNATHY, HORATIO", "ID KW12345678", "DOB 1950-01-02"], box)
    assert not np.array_equal(burned, clean)
    assert np.array_equal(redact(burned, s.redaction_box()), redact(clean, s.redaction_box()))
