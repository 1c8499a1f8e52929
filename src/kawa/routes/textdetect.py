"""Find burned-in text in a grayscale image, fast (numpy + scipy, no OCR).

Scanner annotations are drawn at (or near) the brightest displayed value, in thin, high-contrast strokes,
a row of similar-sized glyphs to a line. Anatomy is either smooth, or bright in thick structures (bone,
metal, collimator edges). So:

1. Work on a copy no larger than ~512 px a side (max-pooled, which keeps thin bright strokes).
2. White top-hat (the image minus its grey opening with a 7x7 square): what remains is bright structure
   narrower than the square, i.e. strokes; thick bright regions and smooth gradients vanish.
3. Stroke pixels: top-hat above 25 % of the image's range and intensity in the top 55 %, grown by
   hysteresis into the connected pixels whose top-hat is above 10 % (the anti-aliased edges).
4. Glyphs: connected components of a plausible glyph size (2 px to 1/6 of the image tall).
5. Lines: glyphs closer than about one glyph height side by side are grouped; a group is text when it holds
   at least three glyphs, or one wide, part-filled component (a word whose glyphs touch). A lone mark (an
   ``L``/``R`` lead marker), a wire or a solid bar is not text.

The regions returned are the groups' bounding boxes in the caller's pixel coordinates, without margin.
Text that is not brighter than its surroundings (dark text on a light plate) is not found: pass
``invert=True`` for that polarity, or redact it with a rule's fixed box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

WORK_SIDE = 512
"""Images larger than this (longest side) are max-pooled down to about it before detection."""

_KERNEL = 7  # widest stroke found, in working pixels
_STRONG = 0.25  # top-hat of a stroke's core, as a fraction of the image's range
_WEAK = 0.10  # top-hat of its anti-aliased edge
_BRIGHT = 0.45  # a core pixel is in the top 55 % of the range
_SATURATED = 0.985  # ... or at the very top, where scanners burn text, with any contrast


@dataclass(frozen=True)
class TextRegion:
    """A detected text line (or block): pixel rows ``y0:y1`` and columns ``x0:x1`` (ends exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int
    glyphs: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def grown(self, margin: int, height: int, width: int) -> TextRegion:
        """The region with ``margin`` pixels more on every side, clipped to a ``height`` x ``width`` image."""
        return TextRegion(
            max(0, self.x0 - margin),
            max(0, self.y0 - margin),
            min(width, self.x1 + margin),
            min(height, self.y1 + margin),
            self.glyphs,
        )


def _pool(image: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    """Max over ``factor`` x ``factor`` blocks (the last partial blocks padded with the image minimum)."""
    if factor == 1:
        return image
    h, w = image.shape
    ph, pw = math.ceil(h / factor) * factor, math.ceil(w / factor) * factor
    if (ph, pw) != (h, w):
        padded = np.full((ph, pw), image.min(), dtype=image.dtype)
        padded[:h, :w] = image
        image = padded
    pooled: NDArray[np.float32] = image.reshape(ph // factor, factor, pw // factor, factor).max(axis=(1, 3))
    return pooled


def _sliding(x: NDArray[Any], size: int, axis: int, op: Any) -> NDArray[Any]:
    """``op`` (np.minimum or np.maximum) over a centred window of ``size`` along ``axis``, edges repeated.

    Windows double (1, 2, 4 ...) so a window of 7 costs three array operations: faster than scipy's
    1-D filters by ~10x at these sizes."""
    if size <= 1:
        return x
    before = (size - 1) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (before, size - 1 - before)
    out = np.pad(x, pad, mode="edge")
    n = x.shape[axis]

    def part(start: int, stop: int) -> tuple[slice, ...]:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    span = 1
    while span < size:
        step = min(span, size - span)
        length = out.shape[axis] - step
        out = op(out[part(0, length)], out[part(step, step + length)])
        span += step
    result: NDArray[Any] = out[part(0, n)]
    return result


def _opening(x: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Grey opening with a ``size`` square: min, then max, over the window, one axis at a time."""
    eroded = _sliding(_sliding(x, size, 0, np.minimum), size, 1, np.minimum)
    opened: NDArray[np.float32] = _sliding(_sliding(eroded, size, 0, np.maximum), size, 1, np.maximum)
    return opened


def _dilate(mask: NDArray[np.bool_], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Binary dilation with a ``shape`` rectangle (separable)."""
    grown: NDArray[np.bool_] = _sliding(_sliding(mask, shape[0], 0, np.logical_or), shape[1], 1, np.logical_or)
    return grown


def detect_text(image: Any, *, invert: bool = False) -> list[TextRegion]:
    """Text regions in a 2-D image (any numeric dtype; bright = high values unless ``invert``).

    Colour images are read as their brightest channel (coloured text stands out in it).
    """
    from scipy import ndimage

    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    if arr.ndim != 2 or min(arr.shape) < 8:
        return []
    work = arr.astype(np.float32)
    if invert:
        work = -work
    factor = max(1, math.ceil(max(work.shape) / WORK_SIDE))
    small = _pool(work, factor)
    lo = float(np.percentile(small[::4, ::4], 1.0))
    hi = float(small.max())
    if hi - lo <= 0:
        return []
    x = (small - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    tophat = x - _opening(x, _KERNEL)
    weak = tophat > _WEAK
    labels, count = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    # A stroke core: high contrast, or saturated (text burned at the maximum value, over bright anatomy).
    strong = ((tophat > _STRONG) & (x > _BRIGHT)) | ((x >= _SATURATED) & (tophat > _WEAK))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    keep &= sizes >= 3
    kept = np.flatnonzero(keep)
    if kept.size == 0:
        return []
    # Number the kept components 1..k, so find_objects builds k slices rather than one per weak component
    # (hundreds in a noisy image: most of its time); the kept components and their boxes are the same.
    renumber = np.zeros(count + 1, dtype=labels.dtype)
    renumber[kept] = np.arange(1, kept.size + 1, dtype=labels.dtype)
    rows = small.shape[0]
    max_height = max(12, rows // 6)
    glyphs: list[tuple[int, int, int, int, int]] = []  # y0, y1, x0, x1, pixels
    for index, found in zip(kept, ndimage.find_objects(renumber[labels], max_label=kept.size), strict=True):
        if found is None:
            continue
        ys, xs = found
        height, width = ys.stop - ys.start, xs.stop - xs.start
        if 2 <= height <= max_height and width <= max(8 * height, 16):
            glyphs.append((ys.start, ys.stop, xs.start, xs.stop, int(sizes[index])))
    if not glyphs:
        return []
    return [_scale(r, factor, arr.shape) for r in _lines(glyphs, small.shape)]


def _lines(glyphs: list[tuple[int, int, int, int, int]], shape: tuple[int, ...]) -> list[TextRegion]:
    """Group glyph boxes into text lines; keep the groups that look like text."""
    from scipy import ndimage

    g = np.asarray(glyphs)
    gap = max(2, int(np.median(g[:, 1] - g[:, 0])))
    boxes = np.zeros(shape[:2], dtype=bool)
    for y0, y1, x0, x1, _ in glyphs:
        boxes[y0:y1, x0:x1] = True
    structure = np.ones((gap + 1, 2 * gap + 1), dtype=bool)  # the grouping reach: stacked lines join a block
    groups, _ = ndimage.label(_dilate(boxes, structure.shape))
    members: dict[int, list[int]] = {}
    for i, (y0, _, x0, _, _) in enumerate(glyphs):
        members.setdefault(int(groups[y0, x0]), []).append(i)
    out = []
    for group in members.values():
        # Text is glyphs of one size: a far taller or flatter neighbour (a collimator edge, a rib border)
        # the grouping reached is not part of the line.
        heights = g[group, 1] - g[group, 0]
        median = float(np.median(heights))
        indices = [i for i, hh in zip(group, heights, strict=True) if 0.35 * median <= hh <= 2.5 * median]
        part = g[indices]
        y0, y1 = int(part[:, 0].min()), int(part[:, 1].max())
        x0, x1 = int(part[:, 2].min()), int(part[:, 3].max())
        if len(indices) < 3:
            height, width = int((part[:, 1] - part[:, 0]).max()), int((part[:, 3] - part[:, 2]).max())
            fill = int(part[:, 4].max()) / max(1, height * width)
            if not (height >= 3 and width >= 2 * height and 0.15 <= fill <= 0.8):
                continue
        out.append(TextRegion(x0, y0, x1, y1, len(indices)))
    return out


def _scale(region: TextRegion, factor: int, shape: tuple[int, ...]) -> TextRegion:
    if factor == 1:
        return region
    return TextRegion(
        region.x0 * factor,
        region.y0 * factor,
        min(shape[1], region.x1 * factor),
        min(shape[0], region.y1 * factor),
        region.glyphs,
    )


def text_boxes(image: Any, margin_px: int = 2, *, invert: bool = False) -> list[tuple[int, int, int, int]]:
    """Pixel boxes ``(x0, y0, x1, y1)`` to blank: every detected text region grown by ``margin_px``."""
    arr = np.asarray(image)
    h, w = arr.shape[0], arr.shape[1]
    regions = detect_text(arr, invert=invert)
    return [(r.x0, r.y0, r.x1, r.y1) for r in (r.grown(margin_px, h, w) for r in regions)]
