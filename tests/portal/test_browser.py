"""In a real browser (Debian's headless Chromium driven by Playwright) during a running embedded X-ray demo
(`kawa demo xray`, a separate process): log in with the credentials the demo prints, watch the app's board
update live (the processed count grows, a processed thumbnail renders), promote a model version from the
Models page and see it appear in the board's "by model version" panel. Screenshots go to test-artifacts/.

Chromium is a system package (`apt-get install chromium`; scripts/system-deps.sh installs it for the test
command). Without it this test fails and says so: a browser test that is skipped is a missing feature.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.portal.browsing import watched_page

CHROMIUM = os.environ.get("KAWA_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BANNER = re.compile(r"portal: (http://127\.0\.0\.1:\d+) \(user (\S+), password ([^\s;]+)(?:; shown once)?\)")


@dataclass
class Demo:
    url: str
    user: str
    password: str
    home: Path
    process: subprocess.Popen[str]
    output: list[str]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """`kawa demo xray` on a fresh home: it trains and promotes v1, then uploads images until stopped."""
    home = tmp_path / ".kawa"
    env = {**os.environ, "KAWA_HOME": str(home), "KAWA_PORTAL__PORT": "0", "PYTHONUNBUFFERED": "1",
           "COLUMNS": "200", "TERM": "dumb"}
    kawa = Path(sys.executable).with_name("kawa")
    process = subprocess.Popen(
        [str(kawa), "demo", "xray", "--rate", "8", "--train-images", "300", "--corrupt", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    output: list[str] = []
    found = threading.Event()
    match: list[re.Match[str]] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            hit = BANNER.search(line)
            if hit and not found.is_set():
                match.append(hit)
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600  # training first: slow on a busy machine
        while not found.wait(0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the demo did not print the portal URL and credentials:\n" + "".join(output))
        url, user, password = match[0].groups()
        yield Demo(url, user, password, home, process, output)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the demo drains and prints its summary
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        reader.join(5)
        # Shown by pytest only when the test failed: what the demo printed and logged.
        print("--- kawa demo xray output (tail) ---\n" + "".join(output)[-4000:])
        demo_log = home / "xray" / "demo.log"
        if demo_log.exists():
            print("--- demo.log (tail) ---\n" + demo_log.read_text(errors="replace")[-6000:])


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium` "
                    "(scripts/system-deps.sh does it for ./scripts/test.sh) or set KAWA_TEST_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def register_copy_of_champion(home: Path) -> int:
    """A second version of the demo's model (the same trained files), as a retraining job would register."""
    from kawa.config import load_config
    from kawa.ml.registry import Registry

    config = load_config(home=str(home))
    registry = Registry(config, publish=False)
    try:
        champion = registry.resolve("pneumonia@champion")
        return registry.register(str(registry.local_path("pneumonia", champion)), "pneumonia")
    finally:
        registry.close()


def count(page: Any, stage: str) -> int:
    return int(page.inner_text(f"[data-testid=count-{stage}]"))


def totals(page: Any, panel: str) -> dict[str, int]:
    """The totals table of a time-series panel: value -> events."""
    cells = page.eval_on_selector_all(
        f"#panel-{panel} table.totals tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    return {value: int(n) for value, n in cells}


def until(page: Any, check: Any, timeout_s: float, what: str) -> None:
    """Poll ``check(page)`` from Python (the portal's CSP forbids the string eval of wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while not check(page):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting until {what}")
        page.wait_for_timeout(250)


def thumbnail_rendered(page: Any) -> bool:
    return bool(page.evaluate(
        "() => [...document.querySelectorAll('#panel-processed img')].some(i => i.complete && i.naturalWidth > 0)"
    ))


@pytest.mark.timeout(900)  # the demo trains its model first: minutes on a busy machine
def test_live_board_and_promotion_in_a_real_browser(demo: Demo, browser: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1440, 1000)

    # Log in: the board redirects to the login form and back.
    page.goto(f"{demo.url}/apps/xray")
    assert "/login" in page.url
    page.fill("input[name=username]", demo.user)
    page.fill("input[name=password]", demo.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{demo.url}/apps/xray")
    assert page.inner_text("[data-testid=whoami]").startswith(demo.user)

    # Live: the processed count grows without a reload, and a processed thumbnail renders.
    until(page, lambda p: count(p, "processed") > 0, 60, "images are processed")
    before = count(page, "processed")
    until(page, lambda p: count(p, "processed") > before, 30, "the processed count grows")
    until(page, thumbnail_rendered, 30, "a processed thumbnail renders")
    src = page.get_attribute("#panel-processed img", "src") or ""
    assert src.startswith("/api/thumbnails/xray-images-processed/")
    until(page, lambda p: "1" in totals(p, "by_version"), 30, "images assessed by v1 are counted")
    page.wait_for_timeout(3000)  # let the charts fill a few ticks for the screenshot
    page.screenshot(path=str(ARTIFACTS / "xray-board.png"), full_page=True)

    # The overview draws the pipeline as a graph: bucket -> topic -> function / route -> buckets.
    page.goto(f"{demo.url}/")
    until(page, lambda p: "xray-deidentify" in (p.text_content("#graph") or ""), 20, "the route appears")
    graph = page.text_content("#graph") or ""
    for name in ("xray-images", "xray.risk-assessment", "xray-images-processed", "xray-images-anonymized"):
        assert name in graph
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # Promote a new version from the Models page.
    version = register_copy_of_champion(demo.home)
    page.goto(f"{demo.url}/models")
    page.click(f"[data-testid=promote-pneumonia-{version}]")
    page.wait_for_selector("[data-testid=flash]")
    assert f"pneumonia@champion now points to version {version}" in page.inner_text("[data-testid=flash]")
    assert page.inner_text("[data-testid=alias-pneumonia-champion]") == f"champion → v{version}"
    page.screenshot(path=str(ARTIFACTS / "models-after-promote.png"), full_page=True)

    # The running function picks up the new champion; the board shows images assessed by it.
    page.goto(f"{demo.url}/apps/xray")
    until(page, lambda p: str(version) in totals(p, "by_version"), 90,
          f"images assessed by v{version} appear")
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "xray-board-after-promote.png"), full_page=True)
    assert not errors, errors
