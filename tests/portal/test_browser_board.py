"""The generic app board in a real browser (Debian's headless Chromium via Playwright, as test_browser.py):
the X-ray app's board draws its counters, image strips captioned by what tells the images apart, a marker on
the image with a positive finding, result rows linking to their images, and charts with a time axis; a tiny
app defined here gets its board with no portal code."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.events import new_event, to_kafka
from kawa.platform import Platform
from tests.portal.apps import install, tally_view, xray_app
from tests.portal.browsing import log_in, watched_page
from tests.portal.conftest import PASSWORD, make_config
from tests.portal.test_api_store_xray import radiograph
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)

RUN = "15823-dd03/"  # every key of one run starts alike: the caption must show what differs
KEYS = [f"{RUN}scan-{i:04d}.png" for i in range(4)]
POSITIVE = KEYS[2]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    from kawa.portal import serve

    platform = Platform(make_config(tmp_path / ".kawa", sample_interval_s=0.3))
    settings = xray_app(platform)
    server = serve(platform)
    try:
        assert server.portal is not None
        server.portal.users.add_user("dana", "data-engineer", PASSWORD)
        yield server, settings
    finally:
        server.stop()
        platform.stop()


def pipeline_ran(platform: Any, s: Any) -> None:
    """What the X-ray pipeline leaves: uploads, processed copies (same key for a PNG), one anonymized
    copy, and a result event per image — one of them positive."""
    image = radiograph().png()
    producer = platform.log.producer()
    try:
        for i, key in enumerate(KEYS):
            platform.store.put(s.incoming_bucket, key, image, content_type="image/png")
            platform.store.put(s.processed_bucket, key, image, content_type="image/png")
            label = "Pneumonia" if key == POSITIVE else "Normal"
            data = {"bucket": s.incoming_bucket, "key": key, "processed_bucket": s.processed_bucket,
                    "processed_key": key, "model": "pneumonia", "model_version": 1, "risk": 0.9 if label ==
                    "Pneumonia" else 0.1, "label": label, "latency_ms": 5.0 + i, "time": time.time() - 30 * i}
            event = new_event("dev.kawa.xray.assessed", "/xray", data, subject=key)
            k, value, headers = to_kafka(event)
            producer.send(s.results_topic, value, key=k, headers=headers)
        platform.store.put(s.anonymized_bucket, KEYS[0], image, content_type="image/png")
    finally:
        producer.close()


def until(page: Any, check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            page.screenshot(path=str(ARTIFACTS / "app-board-timeout.png"), full_page=True)
            raise AssertionError(f"timed out after {timeout_s:g} s waiting until {what}")
        page.wait_for_timeout(200)


def loaded(page: Any, selector: str) -> bool:
    """Every image matching ``selector`` (at least one) has loaded and decoded."""
    sizes = page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    return bool(sizes) and all(w > 0 for w in sizes)


def test_the_xray_board_and_a_tiny_apps_board_render_by_kind(
    served: tuple[Any, Any], browser: Any  # noqa: F811
) -> None:
    server, s = served
    pipeline_ran(server.platform, s)
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1400, 1000)
    log_in(page, server.url, "/apps/xray")

    # Counters, live: the page fills in as the sampler reads the pipeline.
    until(page, lambda: page.inner_text("[data-testid=count-processed]") == str(len(KEYS)), 60, "4 processed")
    assert page.inner_text("[data-testid=count-uploaded]") == str(len(KEYS))
    assert page.inner_text("[data-testid=count-anonymized]") == "1"

    # The image strip: captions tell the images apart; the positive one is marked.
    until(page, lambda: len(page.query_selector_all("#panel-processed figure")) == len(KEYS), 30, "a full strip")
    captions = [c.inner_text() for c in page.query_selector_all("#panel-processed figcaption")]
    assert sorted(captions) == sorted(k.removeprefix(RUN) for k in KEYS)
    until(page, lambda: page.query_selector("#panel-processed figure.marked") is not None, 30, "a marker")
    marked = page.query_selector_all("#panel-processed figure.marked")
    assert [m.get_attribute("data-key") for m in marked] == [POSITIVE]
    assert marked[0].query_selector("[data-testid=marker]").inner_text() == "pneumonia"  # type: ignore[union-attr]
    # The incoming image of the same object finds the same result (joined on the result's incoming key).
    assert [m.get_attribute("data-key") for m in page.query_selector_all("#panel-uploaded figure.marked")] == [POSITIVE]
    until(page, lambda: loaded(page, "#panel-processed img"), 30, "the thumbnails render")

    # Result rows link to their images (PHI-free processed copies), each with a thumbnail.
    until(page, lambda: len(page.query_selector_all("#panel-results tbody tr")) == len(KEYS), 30, "4 result rows")
    links = page.eval_on_selector_all("#panel-results a.object-link", "as => as.map(a => a.getAttribute('href'))")
    assert sorted(links) == sorted(f"/api/buckets/{s.processed_bucket}/objects/{k}" for k in KEYS)
    assert "Pneumonia" in page.inner_text("#panel-results")
    until(page, lambda: loaded(page, "#panel-results img.row-thumb"), 30, "the row thumbnails render")

    # The charts have a time axis: ticks labelled with clock times.
    until(page, lambda: len(page.query_selector_all("#panel-by_label svg text.tick")) >= 2, 30, "time ticks")
    ticks = [t.text_content() or "" for t in page.query_selector_all("#panel-by_label svg text.tick")]
    assert all(re.fullmatch(r"\d{1,2}:\d{2}:\d{2}( [AP]M)?", t) for t in ticks), ticks
    assert page.query_selector_all("#panel-by_label svg rect")  # bars were drawn
    page.screenshot(path=str(ARTIFACTS / "app-board-xray.png"), full_page=True)

    # A second app, unknown to the portal's code: its board and a nav entry appear.
    install(server.platform, tally_view())
    server.platform.store.create_bucket("tally-in")
    server.platform.store.put("tally-in", "one.txt", b"1", content_type="text/plain")
    page.goto(f"{server.url}/apps/tally")
    until(page, lambda: page.inner_text("[data-testid=count-received]") == "1", 30, "the tally counts")
    assert page.query_selector("nav a[href='/apps/tally']") is not None
    assert page.query_selector("nav a[href='/apps/xray']") is not None
    assert [p.get_attribute("data-kind") for p in page.query_selector_all("[data-panel]")] == ["counters"]
    until(page, lambda: "updated" in (page.text_content("#live-status") or ""), 30, "a live update")
    page.screenshot(path=str(ARTIFACTS / "app-board-tally.png"), full_page=True)
    assert not errors, errors
    page.close()
