"""pii-mask over 10,000 records with planted values, and pixel redaction on arrays, PNG, JPEG and DICOM."""

from __future__ import annotations

import io
import json
import random
from typing import TYPE_CHECKING

import numpy as np
import pytest

from kawa.routes.pii import PiiPolicy, mask_record
from kawa.routes.redact import redact_dataset, redact_image_bytes, redact_pixels

if TYPE_CHECKING:
    from kawa.routes.processors.imaging import PixelRedact

KEY = b"pii-test-key-0123456789"


def _records(n: int) -> tuple[list[dict[str, object]], list[list[str]]]:
    rng = random.Random(7)
    planted: list[list[str]] = []
    records = []
    for i in range(n):
        email = f"person{i}.{rng.randrange(10**6)}@mail{i % 97}.example.com"
        phone = f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
        card = " ".join(f"{rng.randrange(1000, 9999)}" for _ in range(4))
        name = f"Name{i}X{rng.randrange(10**6)}"
        national = f"0{rng.randrange(100, 999)}-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
        planted.append([email, phone, card, name, national])
        records.append(
            {
                "id": i,
                "name": name,
                "email": email,
                "card": card,
                "amount": i * 1.5,
                "day": "2024-03-01",
                "notes": f"call me on {phone} or {national}, mail {email}, pay with {card.replace(' ', '-')} thanks",
                "contact": {"email": email, "city": "Leeds"},
            }
        )
    return records, planted


def test_planted_values_never_appear_in_10000_masked_records() -> None:
    records, planted = _records(10_000)
    policy = PiiPolicy(
        fields={"name": "drop", "email": "hmac", "card": "mask", "contact.email": "hmac"}, key=KEY, mask_keep_last=0
    )
    out = [mask_record(r, policy) for r in records]
    # Each record's planted values, searched in its own output (masking never moves values between records).
    leaked = [v for record, values in zip(out, planted, strict=True) for v in values if v in json.dumps(record)]
    assert not leaked, f"{len(leaked)} planted values leaked, e.g. {leaked[:3]}"
    assert "name" not in out[0] and out[0]["card"] == "****"
    assert out[0]["day"] == "2024-03-01" and out[0]["amount"] == 0.0 and out[0]["contact"]["city"] == "Leeds"
    assert "[EMAIL]" in out[0]["notes"] and "[PHONE]" in out[0]["notes"] and "[CARD]" in out[0]["notes"]
    # Keyed pseudonyms are stable and linkable: the same e-mail gives the same hash in both places.
    assert out[5]["email"] == out[5]["contact"]["email"] != records[5]["email"]
    assert records[0]["name"]  # the input is not modified


def test_mask_keep_last_and_bad_action() -> None:
    from kawa.errors import InvalidRoute

    policy = PiiPolicy(fields={"card": "mask"}, mask_keep_last=4, detect=())
    assert mask_record({"card": "4111111111111111"}, policy)["card"] == "************1111"
    with pytest.raises(InvalidRoute, match="use one of drop, mask, hmac"):
        PiiPolicy(fields={"x": "shred"})


def test_redact_black_and_blur_arrays() -> None:
    image = np.arange(100 * 200, dtype=np.uint16).reshape(100, 200) + 1000
    black = redact_pixels(image, [[0, 0.9, 0.3, 1.0]], "black")
    assert (black[90:, :60] == image.min()).all()
    assert np.array_equal(black[:90], image[:90]) and np.array_equal(black[90:, 60:], image[90:, 60:])
    blurred = redact_pixels(image, [[0.5, 0.0, 1.0, 0.5]], "blur")
    assert np.array_equal(blurred[50:], image[50:])
    region, original = blurred[:50, 100:], image[:50, 100:]
    assert not np.array_equal(region, original) and len(np.unique(region)) < len(np.unique(original)) / 20
    frames = np.stack([image, image])
    assert (redact_pixels(frames, [[0, 0, 0.5, 0.5]], frames=True)[:, :50, :100] == image.min()).all()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_redact_encoded_images(fmt: str) -> None:
    from PIL import Image

    rgb = np.full((64, 128, 3), 200, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    data, content_type = redact_image_bytes(buffer.getvalue(), [[0, 0.75, 0.5, 1.0]])
    assert content_type == ("image/png" if fmt == "PNG" else "image/jpeg")
    out = np.asarray(Image.open(io.BytesIO(data)))
    assert out[50:, :60].max() <= 10  # black (JPEG: within compression noise)
    assert out[:40, 70:].min() >= 190


def test_redact_dicom_monochrome1_uses_the_displayed_black() -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("RG1_UNCI.dcm"))
    before = ds.pixel_array.copy()
    redact_dataset(ds, [[0, 0.9, 0.3, 1.0]])
    after = ds.pixel_array
    rows, cols = before.shape
    assert (after[int(0.9 * rows) + 1 :, : int(0.3 * cols) - 1] == (1 << 15) - 1).all()  # MONOCHROME1: max = black
    assert np.array_equal(after[: int(0.9 * rows) - 1], before[: int(0.9 * rows) - 1])


# --- detected text -------------------------------------------------------------------------------------


def _rg1() -> object:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    return dcmread(get_testdata_file("RG1_UNCI.dcm"))


def _text_png(with_text: bool) -> tuple[bytes, np.ndarray]:
    """A 320x256 grey gradient PNG, with white text in its lower-right corner; returns (bytes, text alpha)."""
    from PIL import Image, ImageDraw, ImageFont

    base = np.tile(np.linspace(60, 170, 320, dtype=np.float32), (256, 1))
    alpha = Image.new("L", (320, 256), 0)
    if with_text:
        ImageDraw.Draw(alpha).multiline_text(
            (150, 200), "DOE, JOHNATHAN\nID 99887766", fill=255, font=ImageFont.load_default(size=14)
        )
    a = np.asarray(alpha, dtype=np.float32) / 255
    buffer = io.BytesIO()
    Image.fromarray(np.round(base * (1 - a) + 255 * a).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue(), a


def _step(options: dict[str, object]) -> PixelRedact:
    from kawa.routes.processors.imaging import PixelRedact

    return PixelRedact(options)


def test_pixel_redact_detects_text_in_a_png_and_leaves_a_clean_png_alone() -> None:
    from PIL import Image

    from kawa.routes.message import Message

    step = _step({"detect": "text", "mode": "black", "margin_px": 2})
    data, alpha = _text_png(True)
    [out] = step.process(Message(body=data, id="1", source="test"))
    assert out.headers["pixel-redact-regions"] >= 1
    pixels = np.asarray(Image.open(io.BytesIO(out.body)))
    assert (pixels[alpha > 0] == 0).all()  # every pixel the text touched is black
    ys, xs = np.nonzero(alpha > 0)
    text_box = (ys.max() - ys.min() + 5) * (xs.max() - xs.min() + 5)  # grown by the 2 px margin
    assert (pixels == 0).sum() <= 1.3 * text_box  # and not much else
    assert np.array_equal(pixels[:190], np.asarray(Image.open(io.BytesIO(data)))[:190])
    clean, _ = _text_png(False)
    [untouched] = step.process(Message(body=clean, id="2", source="test"))
    assert untouched.body == clean and untouched.headers["pixel-redact-regions"] == 0


def test_real_cr_without_burned_in_text_is_left_exactly_as_it_was() -> None:
    from kawa.routes.redact import RedactPlan, apply_to_dataset

    ds = _rg1()
    before = bytes(ds.PixelData)
    assert apply_to_dataset(ds, RedactPlan(detect=True, margin_px=2)) == 0
    assert bytes(ds.PixelData) == before  # zero pixels blanked


def test_text_burned_into_a_monochrome1_dicom_is_found_and_blackened() -> None:
    from PIL import Image, ImageDraw, ImageFont

    from kawa.routes.redact import RedactPlan, apply_to_dataset

    ds = _rg1()
    stored = ds.pixel_array.copy()
    rows, cols = stored.shape
    alpha = Image.new("L", (cols, rows), 0)
    ImageDraw.Draw(alpha).multiline_text(
        (120, 1700), "DOE, JOHNATHAN\nID 99887766\nDOB 1961-02-03", fill=255, font=ImageFont.load_default(size=48)
    )
    text = np.asarray(alpha) > 0
    stored[text] = 0  # MONOCHROME1: the displayed white is the lowest value
    ds.PixelData = stored.astype(stored.dtype).tobytes()
    ds.BurnedInAnnotation = "YES"
    assert apply_to_dataset(ds, RedactPlan(detect=True, margin_px=2)) >= 1
    after = ds.pixel_array
    assert (after[text] == (1 << 15) - 1).all()  # displayed black
    changed = after != stored
    ys, xs = np.nonzero(text)
    box = np.zeros_like(text)
    box[ys.min() - 16 : ys.max() + 17, xs.min() - 16 : xs.max() + 17] = True
    assert not (changed & ~box).any()  # nothing blanked away from the text


def test_burned_in_annotation_yes_without_a_region_is_rejected_or_uses_a_rule() -> None:
    from kawa.errors import MessageRejected
    from kawa.routes.redact import RedactPlan, apply_to_dataset, check_rules

    ds = _rg1()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(MessageRejected, match="BurnedInAnnotation YES"):
        apply_to_dataset(ds, RedactPlan(detect=True))
    other = check_rules([{"match": {"Manufacturer": "ACME*"}, "boxes": [[0, 0, 0.5, 0.1]]}])
    with pytest.raises(MessageRejected):
        apply_to_dataset(ds, RedactPlan(detect=True, rules=other))
    rules = check_rules([{"match": {"Manufacturer": "philips*", "Modality": "CR"}, "boxes": [[0, 0.9, 0.3, 1.0]]}])
    assert apply_to_dataset(ds, RedactPlan(detect=True, rules=rules)) == 1
    rows, cols = ds.Rows, ds.Columns
    assert (ds.pixel_array[int(0.9 * rows) + 1 :, : int(0.3 * cols) - 1] == (1 << 15) - 1).all()
    fallback = _rg1()
    fallback.BurnedInAnnotation = "YES"
    assert apply_to_dataset(fallback, RedactPlan(detect=True, fallback_boxes=((0.0, 0.0, 0.2, 0.1),))) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"detect": "ocr"}, "detect must be text or none"),
        ({"margin_px": -1}, "margin-px must be a whole number"),
        ({"detect": "none"}, "give boxes or rules"),
        ({"rules": [{"match": {}, "boxes": [[0, 0, 1, 1]]}]}, "at least one match attribute"),
        ({"rules": [{"boxes": [[0, 0, 1, 1]]}]}, "each pixel-redact rule must be"),
        ({"size": 3}, "unknown options"),
    ],
)
def test_pixel_redact_options_are_checked(options: dict[str, object], message: str) -> None:
    from kawa.errors import InvalidRoute

    with pytest.raises(InvalidRoute, match=message):
        _step(options)
