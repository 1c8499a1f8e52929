"""Stored XSS, in a real browser (Debian's headless Chromium via Playwright, as test_browser.py): a data
engineer uploads an SVG and an HTML page with scripts, and a script object they reference, to a PHI-free
bucket; an admin opening them never runs them in the portal's origin. The payloads are live: the same
markup run as a page of its own does run (the control), so the test fails if the portal served them inline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.platform import Platform
from tests.portal.browsing import watched_page
from tests.portal.conftest import PASSWORD, bearer, make_config
from tests.portal.test_browser import browser  # noqa: F401  (the fixture)

# Each payload marks that it ran three ways: a global, the title, and a request to /api/me (the portal's
# session would answer it, which is what a stored XSS is after).
MARK = "window.__pwned = 1; document.title = 'owned'; fetch('/api/me?from=payload');"
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    '<script href="/api/buckets/shared-public/objects/evil.js"></script>'
    f"<script>{MARK}</script><rect width='100' height='100' fill='red'/></svg>"
)
HTML = f"<!doctype html><html><head><title>harmless</title></head><body><script>{MARK}</script></body></html>"
SCRIPT = MARK


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    from kawa.portal import serve

    platform = Platform(make_config(tmp_path / ".kawa"))
    from kawa.apps.plugin import AppPlugin, BucketDecl, declared
    from kawa.apps.runtime import RunningApp

    shared = AppPlugin("shared", buckets=lambda _s: (BucketDecl("shared-public"),))
    platform.apps["shared"] = RunningApp(declared(shared))
    server = serve(platform)
    try:
        assert server.portal is not None
        users = server.portal.users
        users.add_user("root", "admin", PASSWORD)
        users.add_user("dana", "data-engineer", PASSWORD)
        engineer = bearer(users.create_token("dana")[1])
        yield server, engineer
    finally:
        server.stop()
        platform.stop()


def upload(server: Any, headers: dict[str, str]) -> None:
    import httpx

    assert httpx.post(f"{server.url}/api/buckets", json={"name": "shared-public"}, headers=headers,
                      timeout=10).status_code == 201
    for key, content_type, body in (
        ("evil.js", "application/javascript", SCRIPT),
        ("evil.svg", "image/svg+xml", SVG),
        ("evil.html", "text/html", HTML),
        ("evil-as-png.png", "image/png", HTML),
    ):
        response = httpx.put(f"{server.url}/api/buckets/shared-public/objects/{key}", content=body.encode(),
                             headers={**headers, "content-type": content_type}, timeout=10)
        assert response.status_code == 201, response.text


def until(check: Any, timeout_s: float, what: str, page: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting until {what}")
        page.wait_for_timeout(100)


def test_uploaded_svg_html_and_script_never_run_in_the_portal_origin(
    served: tuple[Any, dict[str, str]], browser: Any  # noqa: F811
) -> None:
    server, engineer = served
    upload(server, engineer)
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()

    # The control: the very same markup, as a page of its own, does run.
    control = context.new_page()
    control.set_content(HTML)
    until(lambda: control.evaluate("() => window.__pwned") == 1, 10, "the control payload runs", control)
    control.close()

    payload_requests: list[str] = []
    context.on("request", lambda request: payload_requests.append(request.url) if "from=payload" in request.url
               else None)
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")

    # The admin opens each object: each one is downloaded, none is rendered.
    for key in ("evil.svg", "evil.html", "evil-as-png.png", "evil.js"):
        with page.expect_download() as download:
            try:
                page.goto(f"{server.url}/api/buckets/shared-public/objects/{key}")
            except Exception as exc:  # Chromium aborts the navigation that became a download
                assert "Download is starting" in str(exc) or "ERR_ABORTED" in str(exc), exc
        assert download.value.suggested_filename == key
        assert page.url == f"{server.url}/"  # still the portal page: nothing replaced it
        assert page.evaluate("() => window.__pwned") is None and page.title() != "owned"

    # A portal page that somehow referenced the stored script (script-src 'self' allows the origin) still
    # would not run it: it is served as application/octet-stream with nosniff, so Chromium refuses it.
    page.evaluate(
        """() => { const s = document.createElement('script');
                   s.onload = () => { window.__loaded = 'ran'; }; s.onerror = () => { window.__loaded = 'refused'; };
                   s.src = '/api/buckets/shared-public/objects/evil.js'; document.head.append(s); }"""
    )
    until(lambda: page.evaluate("() => window.__loaded") is not None, 10, "the script element settles", page)
    assert page.evaluate("() => window.__loaded") == "refused"
    assert page.evaluate("() => window.__pwned") is None and page.title() != "owned"

    # Opened in a frame of the portal (as an <iframe> would): it is downloaded, not rendered in the frame.
    with page.expect_download() as framed:
        page.evaluate(
            """() => { const f = document.createElement('iframe');
                       f.src = '/api/buckets/shared-public/objects/evil.svg'; document.body.append(f); }"""
        )
    assert framed.value.suggested_filename == "evil.svg"
    assert page.evaluate("() => window.__pwned") is None and page.title() != "owned"
    assert payload_requests == [], payload_requests
    context.close()


def test_a_viewer_board_renders_live_without_the_dead_letter_panel(
    served: tuple[Any, dict[str, str]], browser: Any  # noqa: F811
) -> None:
    from tests.portal.apps import xray_app
    from tests.portal.test_boards import SECRET_KEY, dead_letter

    server, _engineer = served
    platform = server.platform
    settings = xray_app(platform)
    dead_letter(platform, settings.dead_letter_topic, "dl-1", f"cannot decode {SECRET_KEY}")
    assert server.portal is not None
    server.portal.users.add_user("vera", "viewer", PASSWORD)
    page, errors = watched_page(browser)
    page.goto(f"{server.url}/login?next=/apps/xray")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/apps/xray")
    until(lambda: "updated" in (page.text_content("#live-status") or ""), 30, "a live update is rendered", page)
    assert page.query_selector("[data-testid=count-dead_lettered]") is not None  # counts are for everyone
    assert page.query_selector("[data-panel=dead_letters]") is None
    assert SECRET_KEY not in page.content()
    assert not errors, errors
    page.close()
