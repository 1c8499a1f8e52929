"""Pixel redaction of burned-in text: black out or blur rectangular regions of an image.

Boxes are relative: ``[x0, y0, x1, y1]`` as fractions of the width and height (``[0, 0.9, 0.3, 1.0]`` is the
bottom-left corner strip, 30 % wide and 10 % high) so one configuration fits every resolution. Works on
numpy arrays (2-D grey, 3-D colour or multi-frame), on encoded PNG/JPEG bytes (:func:`redact_image_bytes`)
and on DICOM datasets (:func:`redact_dataset`, frames and photometric interpretation respected: "black" is
the darkest displayed value, so MONOCHROME1 gets the maximum).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from kawa.deadletter import UNDECODABLE, scrub, tag
from kawa.errors import InvalidRoute, MessageRejected

Mode = Literal["black", "blur"]
Box = Sequence[float]


def check_boxes(boxes: Any) -> list[tuple[float, float, float, float]]:
    """Validate relative boxes; raises :class:`InvalidRoute` with what is wrong."""
    if not isinstance(boxes, list | tuple) or not boxes:
        raise InvalidRoute("pixel-redact needs boxes: [[x0, y0, x1, y1], ...] in relative coordinates (0..1)")
    out = []
    for box in boxes:
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise InvalidRoute(f"box {box!r} must be [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise InvalidRoute(f"box {box!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        out.append((x0, y0, x1, y1))
    return out


def _pixel_box(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    # Round outward so a box never leaves a partial row or column of the region unredacted.
    import math

    return (
        max(0, math.floor(y0 * height)),
        min(height, math.ceil(y1 * height)),
        max(0, math.floor(x0 * width)),
        min(width, math.ceil(x1 * width)),
    )


def _blur(region: Any) -> Any:
    """Heavy blur: average over blocks of ~1/4 of the region's short side, then a box filter over that."""
    import numpy as np

    h, w = region.shape[:2]
    block = max(2, min(h, w) // 4)
    work = region.astype(np.float64)
    out = np.empty_like(work)
    for r in range(0, h, block):
        for c in range(0, w, block):
            tile = work[r : r + block, c : c + block]
            out[r : r + block, c : c + block] = tile.mean(axis=(0, 1), keepdims=True)
    return out


def redact_pixels(
    array: Any,
    boxes: Sequence[Box],
    mode: Mode = "black",
    *,
    fill: float | None = None,
    frames: bool | None = None,
) -> Any:
    """Return a copy of ``array`` with every box blacked out (``fill`` or the array's minimum) or blurred.

    ``array`` is ``(rows, cols)``, ``(rows, cols, channels)``, or ``(frames, rows, cols[, channels])`` when
    ``frames`` is true (the default guesses: 4-D, or 3-D with a last axis longer than 4, is multi-frame).
    """
    import numpy as np

    checked = check_boxes(list(boxes))
    if mode not in ("black", "blur"):
        raise InvalidRoute(f"pixel-redact mode must be 'black' or 'blur', got {mode!r}")
    out = np.array(array, copy=True)
    if frames is None:
        frames = out.ndim == 4 or (out.ndim == 3 and out.shape[-1] > 4)
    stack = out if frames else out[np.newaxis, ...]
    height, width = stack.shape[1], stack.shape[2]
    value = stack.min() if fill is None else fill
    for box in checked:
        r0, r1, c0, c1 = _pixel_box(box, height, width)
        if r0 >= r1 or c0 >= c1:
            continue
        if mode == "black":
            stack[:, r0:r1, c0:c1, ...] = value
        else:
            for index in range(stack.shape[0]):
                blurred = _blur(stack[index, r0:r1, c0:c1, ...])
                if np.issubdtype(stack.dtype, np.integer):
                    blurred = np.rint(blurred)
                stack[index, r0:r1, c0:c1, ...] = blurred.astype(stack.dtype)
    return out


def redact_image_bytes(data: bytes, boxes: Sequence[Box], mode: Mode = "black") -> tuple[bytes, str]:
    """Redact an encoded PNG or JPEG; returns ``(bytes, content type)`` in the same format."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Never retried: the same bytes are the same bomb (the reason code says so, see kawa.deadletter).
        raise MessageRejected(
            "pixel-redact: the image declares more pixels than allowed (decompression bomb guard); it was not "
            "decoded"
        ) from exc
    except UnidentifiedImageError as exc:
        raise tag(MessageRejected("pixel-redact: the bytes are not a PNG or JPEG image"), UNDECODABLE) from exc
    except OSError as exc:
        raise tag(MessageRejected(f"pixel-redact: not a readable PNG/JPEG image: {scrub(str(exc))}"),
                  UNDECODABLE) from exc
    fmt = (image.format or "PNG").upper()
    array = np.asarray(image)
    redacted = redact_pixels(array, boxes, mode, fill=0, frames=False)
    buffer = io.BytesIO()
    result = Image.fromarray(redacted, mode=image.mode if image.mode != "P" else None)
    if fmt == "JPEG":
        result.save(buffer, format="JPEG", quality=95)
        return buffer.getvalue(), "image/jpeg"
    result.save(buffer, format="PNG", compress_level=1)  # speed over size: ~2x less CPU per image
    return buffer.getvalue(), "image/png"


def redact_dataset(ds: Any, boxes: Sequence[Box], mode: Mode = "black") -> Any:
    """Redact a DICOM dataset's pixels in place; compressed pixel data is written back uncompressed
    (Explicit VR Little Endian). Returns the dataset."""
    from pydicom.uid import ExplicitVRLittleEndian

    if "PixelData" not in ds:
        raise tag(MessageRejected("pixel-redact: the DICOM dataset has no pixel data"), UNDECODABLE)
    try:
        array = ds.pixel_array
    except Exception as exc:
        raise tag(MessageRejected(f"pixel-redact: cannot decode the DICOM pixel data: {scrub(str(exc))}"),
                  UNDECODABLE) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1) > 1
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).upper()
    fill = None
    if photometric == "MONOCHROME1":
        bits = int(getattr(ds, "BitsStored", array.dtype.itemsize * 8))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        fill = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    elif photometric == "MONOCHROME2":
        bits = int(getattr(ds, "BitsStored", array.dtype.itemsize * 8))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        fill = -(1 << (bits - 1)) if signed else 0
    else:
        fill = 0
    redacted = redact_pixels(array, boxes, mode, fill=fill, frames=frames)
    transfer = ds.file_meta.TransferSyntaxUID if getattr(ds, "file_meta", None) else None
    if transfer is not None and transfer.is_compressed:
        ds.PhotometricInterpretation = "RGB" if photometric.startswith("YBR") else photometric or "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = redacted.tobytes()
    if "PixelData" in ds:
        ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    return ds
