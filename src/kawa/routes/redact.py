"""Pixel redaction of burned-in text: black out or blur the regions of an image that hold text.

Where the text is comes from the text detector (:mod:`kawa.routes.textdetect`, ``detect=True``), from fixed
boxes, or — for DICOM — from rules on the header (manufacturer, model, modality ...), as DICOM
de-identification recipes keep them. An image without detected text and without a matching rule or box is
left exactly as it was: no fixed anatomical area is ever blanked "just in case".

Boxes are relative: ``[x0, y0, x1, y1]`` as fractions of the width and height (``[0, 0.9, 0.3, 1.0]`` is the
bottom-left corner strip, 30 % wide and 10 % high) so one configuration fits every resolution. Works on
numpy arrays (2-D grey, 3-D colour or multi-frame), on encoded PNG/JPEG bytes (:func:`redact_image_bytes`)
and on DICOM datasets (:func:`redact_dataset`, frames and photometric interpretation respected: "black" is
the darkest displayed value, so MONOCHROME1 gets the maximum).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from kawa.deadletter import UNDECODABLE, scrub, tag
from kawa.errors import InvalidRoute, MessageRejected

Mode = Literal["black", "blur"]
Box = Sequence[float]
PixelBox = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, ends exclusive."""


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


def pixel_box(box: Box, height: int, width: int) -> PixelBox:
    """A relative box in pixels of a ``height`` x ``width`` image, rounded outward (a box never leaves a
    partial row or column of its region unredacted)."""
    x0, y0, x1, y1 = box
    return (
        max(0, math.floor(x0 * width)),
        max(0, math.floor(y0 * height)),
        min(width, math.ceil(x1 * width)),
        min(height, math.ceil(y1 * height)),
    )


@dataclass(frozen=True)
class Rule:
    """Boxes to redact on DICOM images whose header matches: ``match`` maps attribute keywords
    (``Manufacturer``, ``ManufacturerModelName``, ``Modality``, ``BurnedInAnnotation`` ...) to
    case-insensitive shell patterns (``"GE*"``); every one must match."""

    match: Mapping[str, str]
    boxes: tuple[tuple[float, float, float, float], ...]

    def matches(self, ds: Any) -> bool:
        for keyword, pattern in self.match.items():
            value = ds.get(keyword)
            if value is None or not fnmatchcase(str(value).upper(), pattern.upper()):
                return False
        return True


def check_rules(rules: Any) -> tuple[Rule, ...]:
    """Validate ``[{match: {Keyword: pattern}, boxes: [[x0, y0, x1, y1], ...]}, ...]``."""
    if rules is None:
        return ()
    if not isinstance(rules, list | tuple):
        raise InvalidRoute("pixel-redact rules must be a list of {match: {Keyword: pattern}, boxes: [...]}")
    out = []
    for rule in rules:
        if not isinstance(rule, Mapping) or set(rule) != {"match", "boxes"} or not isinstance(rule["match"], Mapping):
            raise InvalidRoute(
                "each pixel-redact rule must be {match: {Manufacturer: 'ACME*', ...}, boxes: [[x0, y0, x1, y1]]}"
            )
        if not rule["match"]:
            raise InvalidRoute("pixel-redact rule needs at least one match attribute (e.g. Manufacturer)")
        out.append(Rule({str(k): str(v) for k, v in rule["match"].items()}, tuple(check_boxes(rule["boxes"]))))
    return tuple(out)


@dataclass(frozen=True)
class RedactPlan:
    """What to redact: detected text (``detect``), fixed ``boxes`` (always), ``rules`` (DICOM whose header
    matches). ``fallback_boxes`` are used for a DICOM that declares ``BurnedInAnnotation: YES`` when
    neither detection nor a rule found a region; without them such an image is rejected rather than
    passed on with its text. Regions are grown by ``margin_px`` pixels."""

    detect: bool = True
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    rules: tuple[Rule, ...] = ()
    fallback_boxes: tuple[tuple[float, float, float, float], ...] | None = None
    margin_px: int = 2
    mode: Mode = "black"

    def regions(self, display: Any, relative: Sequence[Box] = ()) -> list[PixelBox]:
        """Pixel boxes for an image whose bright text is high in ``display`` (2-D)."""
        height, width = display.shape[0], display.shape[1]
        out = [pixel_box(b, height, width) for b in [*self.boxes, *relative]]
        if self.detect:
            from kawa.routes.textdetect import text_boxes

            out += text_boxes(display, self.margin_px)
        return out


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
    shape = np.shape(array)
    multi = _is_multiframe(len(shape), shape[-1]) if frames is None else frames
    height, width = (shape[1], shape[2]) if multi else (shape[0], shape[1])
    return blank(array, [pixel_box(b, height, width) for b in checked], mode, fill=fill, frames=multi)


def _is_multiframe(ndim: int, last: int) -> bool:
    return ndim == 4 or (ndim == 3 and last > 4)


def blank(
    array: Any, boxes: Sequence[PixelBox], mode: Mode = "black", *, fill: float | None = None, frames: bool = False
) -> Any:
    """A copy of ``array`` with every pixel box ``(x0, y0, x1, y1)`` blacked out or blurred (every frame
    when ``frames``)."""
    import numpy as np

    if mode not in ("black", "blur"):
        raise InvalidRoute(f"pixel-redact mode must be 'black' or 'blur', got {mode!r}")
    out = np.array(array, copy=True)
    stack = out if frames else out[np.newaxis, ...]
    value = stack.min() if fill is None else fill
    for c0, r0, c1, r1 in boxes:
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


def redact_image_bytes(
    data: bytes, boxes: Sequence[Box] = (), mode: Mode = "black", *, detect: bool = False, margin_px: int = 2
) -> tuple[bytes, str]:
    """Redact an encoded PNG or JPEG (``boxes``, and detected text when ``detect``); returns
    ``(bytes, content type)`` in the same format."""
    plan = RedactPlan(
        detect=detect, boxes=tuple(check_boxes(list(boxes))) if boxes else (), margin_px=margin_px, mode=mode
    )
    out, content_type, _ = apply_to_image_bytes(data, plan)
    return out, content_type


def apply_to_image_bytes(data: bytes, plan: RedactPlan) -> tuple[bytes, str, int]:
    """``(bytes, content type, regions redacted)``; an image with nothing to redact comes back unchanged."""
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
    content_type = "image/jpeg" if fmt == "JPEG" else "image/png"
    array = np.asarray(image.convert("RGB") if image.mode == "P" else image)
    display = array if array.ndim == 2 else array[..., :3].max(axis=-1)
    regions = plan.regions(display)
    if not regions:
        return data, content_type, 0
    redacted = blank(array, regions, plan.mode, fill=0, frames=False)
    buffer = io.BytesIO()
    result = Image.fromarray(redacted)
    if fmt == "JPEG":
        result.save(buffer, format="JPEG", quality=95)
    else:
        result.save(buffer, format="PNG", compress_level=1)  # speed over size: ~2x less CPU per image
    return buffer.getvalue(), content_type, len(regions)


def redact_dataset(
    ds: Any,
    boxes: Sequence[Box] = (),
    mode: Mode = "black",
    *,
    detect: bool = False,
    margin_px: int = 2,
    rules: Sequence[Rule] = (),
    fallback_boxes: Sequence[Box] | None = None,
) -> Any:
    """Redact a DICOM dataset's pixels in place (see :func:`apply_to_dataset`). Returns the dataset."""
    plan = RedactPlan(
        detect=detect,
        boxes=tuple(check_boxes(list(boxes))) if boxes else (),
        rules=tuple(rules),
        fallback_boxes=tuple(check_boxes(list(fallback_boxes))) if fallback_boxes else None,
        margin_px=margin_px,
        mode=mode,
    )
    apply_to_dataset(ds, plan)
    return ds


def apply_to_dataset(ds: Any, plan: RedactPlan) -> int:
    """Redact a DICOM dataset's pixels in place; returns the number of regions redacted.

    Regions: the plan's boxes, the boxes of every rule the header matches, and detected text (on the
    brightest *displayed* value over all frames: MONOCHROME1 is inverted first). "Black" is the darkest
    displayed value. ``BurnedInAnnotation`` (0028,0301) ``YES`` with no region found falls back to the plan's
    ``fallback_boxes``, or rejects the image. With no region the dataset is left untouched; otherwise
    compressed pixel data is written back uncompressed (Explicit VR Little Endian)."""
    import numpy as np
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
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    display = array.max(axis=0) if frames else array
    if samples > 1:
        display = display[..., :3].max(axis=-1)
    if photometric == "MONOCHROME1":
        display = display.max() - display.astype(np.float32)
    relative = [box for rule in plan.rules if rule.matches(ds) for box in rule.boxes]
    regions = plan.regions(display, relative)
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES" and not regions:
        if plan.fallback_boxes is None:
            raise MessageRejected(
                "pixel-redact: the DICOM header declares burned-in annotation (BurnedInAnnotation YES) but no "
                "text was detected and no rule or box matched; add a rule for this scanner (rules: [{match: "
                "{Manufacturer: ...}, boxes: [...]}]) or fallback-boxes to the pixel-redact step"
            )
        regions = plan.regions(display, plan.fallback_boxes)
    if not regions:
        return 0
    bits = int(getattr(ds, "BitsStored", array.dtype.itemsize * 8))
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    fill: float
    if photometric == "MONOCHROME1":
        fill = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    elif photometric == "MONOCHROME2":
        fill = -(1 << (bits - 1)) if signed else 0
    else:
        fill = 0
    redacted = blank(array, regions, plan.mode, fill=fill, frames=frames)
    transfer = ds.file_meta.TransferSyntaxUID if getattr(ds, "file_meta", None) else None
    if transfer is not None and transfer.is_compressed:
        ds.PhotometricInterpretation = "RGB" if photometric.startswith("YBR") else photometric or "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = redacted.tobytes()
    if "PixelData" in ds:
        ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    return len(regions)
