"""How stored object content is served: never as active content in the portal's origin.

An uploader chooses an object's bytes and its content type, so the portal treats both as hostile. Only
raster images it has decoded and re-encoded itself (PNG and JPEG, with Pillow; metadata dropped) are
shown inline, under the type the portal wrote. Everything else — SVG, HTML, scripts, XML, images that do
not decode, the uploader's claimed type — goes out as ``application/octet-stream`` with
``Content-Disposition: attachment``. Every object response also carries ``X-Content-Type-Options:
nosniff`` and ``Content-Security-Policy: default-src 'none'; sandbox``, so even a browser that rendered
it would give it an opaque origin with no scripts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import quote

INLINE_RASTER = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG"}
MAX_REENCODE_BYTES = 32 * 1024 * 1024  # larger images are downloaded, not decoded in the portal
MAX_REENCODE_PIXELS = 40_000_000
OBJECT_CSP = "default-src 'none'; sandbox"


@dataclass(frozen=True)
class Served:
    body: bytes | None  # None: stream the stored bytes unchanged
    media_type: str
    inline: bool


def reencode_raster(data: bytes, content_type: str | None) -> Served | None:
    """The image decoded and written anew by the portal (PNG or JPEG), or None when it is not one of
    those or does not decode as the format it claims."""
    fmt = INLINE_RASTER.get((content_type or "").split(";")[0].strip().lower())
    if fmt is None or len(data) > MAX_REENCODE_BYTES:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.format != fmt or opened.width * opened.height > MAX_REENCODE_PIXELS:
                return None
            opened.load()
            image: Image.Image = opened
            out = io.BytesIO()
            if fmt == "JPEG":
                if image.mode not in ("L", "RGB", "CMYK"):
                    image = image.convert("RGB")
                image.save(out, "JPEG", quality=95)
                return Served(out.getvalue(), "image/jpeg", True)
            if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
                image = image.convert("RGBA")
            image.save(out, "PNG")
            return Served(out.getvalue(), "image/png", True)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def object_headers(key: str, served: Served) -> dict[str, str]:
    """The headers every object response carries (see the module docstring)."""
    name = key.rsplit("/", 1)[-1] or "object"
    disposition = "inline" if served.inline else "attachment"
    return {
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": OBJECT_CSP,
        "Cache-Control": "private, no-cache",
    }
