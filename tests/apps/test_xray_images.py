"""Synthetic radiographs, decoding, redaction and the dataset loader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import assume, given, settings
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
    redact_text,
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


def _text_pixels(burned: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Where :func:`burn_in_text` drew glyphs: brighter than the dark plate it darkens the text area to."""
    return np.asarray((burned != clean) & (burned > clean * 0.08 + 1e-6))


def _grown_bbox(mask: np.ndarray, margin: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    out = np.zeros(mask.shape, dtype=bool)
    out[max(0, ys.min() - margin) : ys.max() + 1 + margin, max(0, xs.min() - margin) : xs.max() + 1 + margin] = True
    return out


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    size=st.sampled_from([128, 200, 256, 384]),
    x0=st.floats(0.0, 0.5),
    y0=st.floats(0.0, 0.8),
    width=st.floats(0.25, 0.5),
    height=st.floats(0.12, 0.2),
)
def test_detected_redaction_removes_every_text_pixel_and_little_else(
    seed: int, size: int, x0: float, y0: float, width: float, height: float
) -> None:
    """For any place, seed and size of legible text (lines >= 7 px apart): every pixel the burn-in drew is
    black after :func:`redact_text`, nothing outside the blanked regions changed, and the blanked area is at
    most 1.3x the text's bounding box grown by the 2 px margin."""
    box = (x0, y0, min(1.0, x0 + width), min(1.0, y0 + height))
    clean = render_chest(np.random.default_rng(seed), size, pneumonia=bool(seed % 2))
    burned = burn_in_text(clean, ["ABERNATHY, HORATIO", "ID KW12345678", "DOB 1950-01-02"], box)
    text = _text_pixels(burned, clean)
    rows = np.nonzero(text.any(axis=1))[0]
    assume((rows.max() - rows.min() + 1) / 3 >= 7)  # smaller text is a smudge, not legible text
    out = redact_text(burned, 2)
    blanked = out != burned
    assert not out[text].any(), f"{int((out[text] > 0).sum())} text pixels survive"
    assert np.array_equal(out[~blanked], burned[~blanked])
    assert blanked.sum() <= 1.3 * _grown_bbox(text, 2).sum()


def test_generated_label_plates_are_found_and_removed() -> None:
    """The generator's own text (default corner and size) is detected: every glyph pixel is black afterwards,
    and nothing outside the text's box (grown by the margin) was blanked."""
    for seed in range(8):
        image = RadiographGenerator(seed, size=256).generate(pneumonia=bool(seed % 2))
        clean = render_chest(np.random.default_rng(seed), 256, image.pneumonia)  # the same draws, no text
        text = _text_pixels(image.pixels, clean)
        assert text.sum() > 200
        out = redact_text(image.pixels, SETTINGS.redact_margin_px)
        assert not out[text].any(), seed
        blanked = out != image.pixels
        assert not (blanked & ~_grown_bbox(text, SETTINGS.redact_margin_px + 1)).any(), seed


def test_real_cr_radiograph_without_text_is_not_blanked() -> None:
    """pydicom-data's RG1_UNCI.dcm: a real computed-radiography chest image with no burned-in text.
    Decoded as the pipeline decodes it, redaction changes no pixel (bound: 0)."""
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("RG1_UNCI.dcm") or "").read_bytes()
    pixels = decode(data)
    assert pixels.shape == (1955, 1841)
    assert np.array_equal(redact_text(pixels, SETTINGS.redact_margin_px), pixels)


def _real_background(side: int = 480) -> np.ndarray:
    """RG1 (real CR chest), displayed (MONOCHROME1 inverted), area-averaged to about ``side`` px."""
    from pydicom.data import get_testdata_file

    pixels = decode(Path(get_testdata_file("RG1_UNCI.dcm") or "").read_bytes())
    f = pixels.shape[0] // side
    h, w = (pixels.shape[0] // f) * f, (pixels.shape[1] // f) * f
    return np.asarray(pixels[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)), dtype=np.float32)


@pytest.mark.parametrize("font_size", [11, 16, 24])
@pytest.mark.parametrize("where", ["top-left", "top-right", "bottom-left", "bottom-right", "centre-strip"])
def test_text_drawn_on_a_real_radiograph_is_removed_tightly(where: str, font_size: int) -> None:
    """White text drawn (Pillow, anti-aliased) into each corner and across the middle of the real CR image,
    over dark lung and bright abdomen alike: no pixel the text touched survives, and little else is blanked."""
    from PIL import Image, ImageDraw, ImageFont

    background = _real_background()
    h, w = background.shape
    lines = ["PEMBERTON, ISADORA", "ID KW48213377 F", "DOB 1948-11-30"]
    font = ImageFont.load_default(size=font_size)
    alpha = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(alpha)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font)
    tw, th = right - left, bottom - top
    inset = 16  # inside the collimator edge: RG1 has a bright, thin one along the top and right borders
    x = {"top-left": inset, "bottom-left": inset, "top-right": w - tw - inset, "bottom-right": w - tw - inset}.get(
        where, (w - tw) // 2
    )
    y = {"top-left": inset, "top-right": inset, "bottom-left": h - th - inset, "bottom-right": h - th - inset}.get(
        where, h // 2
    )
    draw.multiline_text((x - left, y - top), "\n".join(lines), fill=255, font=font)
    a = np.asarray(alpha, dtype=np.float32) / 255
    burned = np.asarray(background * (1 - a) + a, dtype=np.float32)  # saturated white, as scanners burn it
    out = redact_text(burned, 2)
    touched = a > 0
    assert not out[touched].any(), f"{int((out[touched] > 0).sum())} of {int(touched.sum())} text pixels survive"
    blanked = out != burned
    # Tight: at most 1.3x the text's box grown by the margin, and nothing farther than 12 px from the text
    # (a glyph-sized piece of anatomy right next to a line can join it).
    assert blanked.sum() <= 1.3 * _grown_bbox(touched, 2).sum()
    assert not (blanked & ~_grown_bbox(touched, 12)).any(), "blanked pixels far outside the text's box"
    assert np.array_equal(out[~blanked], burned[~blanked])
