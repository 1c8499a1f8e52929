"""What the portal's browser tests share: a served portal with one signed-up user, and signing in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kawa.platform import Platform
from tests.portal.conftest import PASSWORD, make_config


@contextmanager
def portal_served(home: Path, user: str, role: str, **portal: Any) -> Iterator[Any]:
    """A platform on ``home`` with its portal served on a free port, and ``user`` signed up with ``role``."""
    from kawa.portal import serve

    platform = Platform(make_config(home, **portal))
    server = serve(platform)
    try:
        assert server.portal is not None
        server.portal.users.add_user(user, role, PASSWORD)
        yield server
    finally:
        server.stop()
        platform.stop()


def log_in(page: Any, url: str, target: str, user: str = "dana") -> None:
    """Sign in as ``user`` through the login form and land on ``target``."""
    page.goto(f"{url}/login?next={target}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}{target}")


def watched_page(browser: Any, width: int | None = None, height: int | None = None) -> tuple[Any, list[str]]:
    """A new page (``width`` by ``height``, else Playwright's default size) and the list that collects its
    uncaught script errors: a test asserts it stays empty."""
    page = browser.new_page(viewport={"width": width, "height": height}) if width and height else browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors
