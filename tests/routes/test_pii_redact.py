"""pii-mask over 10,000 records with planted values, and pixel redaction on arrays, PNG, JPEG and DICOM."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest

from kawa.routes.pii import PiiPolicy, mask_record
from kawa.routes.redact import redact_dataset, redact_image_bytes, redact_pixels

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
