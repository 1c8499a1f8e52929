"""Serving stored objects: only PNG/JPEG that the portal decoded and re-encoded are shown inline; SVG, HTML,
scripts, a "PNG" that is not one, go out as octet-stream attachments; every object response is sandboxed.
(The browser side of the same promise: tests/portal/test_browser_content.py.)"""

from __future__ import annotations

import io
from typing import Any

import pytest

from kawa.portal.content import reencode_raster
from kawa.portal.permissions import Role
from tests.portal.conftest import bearer

SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script href="/api/buckets/public/objects/evil.js"/><script>alert(1)</script></svg>')
HTML = b"<!doctype html><html><body><script>document.title='owned'</script></body></html>"


def png(with_text: bytes = b"") -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if with_text:
        info.add_text("Comment", with_text.decode())
    out = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 6), (30, 200, 30)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def public(platform: Any) -> str:
    from kawa.apps.plugin import AppPlugin, BucketDecl, declared
    from kawa.apps.runtime import RunningApp

    platform.apps["shared"] = RunningApp(declared(AppPlugin("shared", buckets=lambda _s: (BucketDecl("public"),))))
    platform.store.create_bucket("public")
    return "public"


def assert_sandboxed(response: Any) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = response.headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "script-src 'self'" not in csp


@pytest.mark.parametrize(("key", "content_type", "body"), [
    ("evil.svg", "image/svg+xml", SVG),
    ("evil.html", "text/html", HTML),
    ("evil.js", "application/javascript", b"document.title = 'owned'"),
    ("evil.xml", "text/xml", b"<x/>"),
    ("polyglot.png", "image/png", HTML),  # claims PNG, is HTML: it does not decode, so it is not shown
    ("mislabelled.jpg", "image/jpeg", png()),  # a PNG claiming JPEG: not what it says
    ("notes.txt", "text/plain", b"plain"),
    ("untyped", None, HTML),
])
def test_everything_but_reencoded_rasters_is_a_sandboxed_attachment(
    client: Any, tokens: dict[Role, str], platform: Any, public: str, key: str, content_type: str | None,
    body: bytes,
) -> None:
    platform.store.put(public, key, body, content_type=content_type)
    response = client.get(f"/api/buckets/{public}/objects/{key}", headers=bearer(tokens[Role.ADMIN]))
    assert response.status_code == 200 and response.content == body  # the bytes, unchanged, to download
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert key in response.headers["content-disposition"]
    assert_sandboxed(response)


def test_png_and_jpeg_are_reencoded_and_shown_inline(
    client: Any, tokens: dict[Role, str], platform: Any, public: str
) -> None:
    from PIL import Image

    platform.store.put(public, "a.png", png(with_text=b"<script>x</script>"), content_type="image/png")
    platform.store.put(public, "b.jpg", jpeg(), content_type="image/jpeg")
    for key, media_type, fmt in (("a.png", "image/png", "PNG"), ("b.jpg", "image/jpeg", "JPEG")):
        response = client.get(f"/api/buckets/{public}/objects/{key}", headers=bearer(tokens[Role.VIEWER]))
        assert response.status_code == 200 and response.headers["content-type"] == media_type
        assert response.headers["content-disposition"].startswith("inline;")
        assert_sandboxed(response)
        image = Image.open(io.BytesIO(response.content))
        assert image.format == fmt and image.size == (8, 6)
    inline_png = client.get(f"/api/buckets/{public}/objects/a.png", headers=bearer(tokens[Role.VIEWER])).content
    assert b"<script>" not in inline_png  # the uploader's text chunk is not carried over


def test_reencode_refuses_what_is_not_the_raster_it_claims() -> None:
    assert reencode_raster(SVG, "image/svg+xml") is None
    assert reencode_raster(HTML, "image/png") is None
    assert reencode_raster(png(), "image/jpeg") is None
    served = reencode_raster(png(), "image/png; charset=binary")
    assert served is not None and served.inline and served.media_type == "image/png"


def test_phi_gate_still_applies(client: Any, tokens: dict[Role, str], platform: Any) -> None:
    platform.store.create_bucket("scans")
    platform.store.put("scans", "a.png", png(), content_type="image/png")
    assert client.get("/api/buckets/scans/objects/a.png", headers=bearer(tokens[Role.VIEWER])).status_code == 403
    assert client.get("/api/buckets/scans/objects/a.png", headers=bearer(tokens[Role.DATA_ENGINEER])
                      ).status_code == 200
