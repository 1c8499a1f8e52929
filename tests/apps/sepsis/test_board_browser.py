"""The sepsis app's board in a real browser (Debian's headless Chromium via Playwright, as the portal's tests): the
counters agree with what was sent and scored, the alert stream lists pseudonyms only — no patient identifier
reaches the page — and the charts are drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kawa.apps.runtime import start_app
from kawa.apps.sepsis import fhir
from kawa.apps.sepsis.plugin import plugin
from kawa.apps.sepsis.settings import SimSettings
from kawa.apps.sepsis.sim import simulate
from kawa.events.cloudevents import to_kafka
from kawa.testing import cloud_event
from tests.apps.sepsis.test_pipeline import FHIR_TYPE, bundles, read
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)
from tests.portal.test_browser_board import until


def test_the_sepsis_board_shows_alerts_under_pseudonyms(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    sim = simulate(SimSettings(patients=80, hours=2, seed=21))
    # a data engineer has phi.read: and still sees only pseudonyms
    with portal_served(tmp_path / ".kawa", "nia", "data-engineer", sample_interval_s=0.3) as server:
        platform = server.platform
        start_app(platform, plugin, {"threshold": 5, "budget_per_h": 10_000})
        producer = platform.log.producer()
        sent = 0
        for _patient, obs in bundles(sim):
            key, value, headers = to_kafka(cloud_event(FHIR_TYPE, fhir.encode_bundle(obs)))
            producer.produce("sepsis.observations", value, key=key, headers=headers)
            sent += 1
        producer.flush()
        producer.close()
        scored = read(platform, "sepsis.scores", sent)
        alerts = read(platform, "sepsis.alerts", 1, timeout=30)
        assert len(scored) == sent and alerts, "the simulated ward raised no alert at threshold 5"
        ARTIFACTS.mkdir(exist_ok=True)
        page, errors = watched_page(browser, 1400, 1100)
        log_in(page, server.url, "/apps/sepsis", "nia")
        until(page, lambda: page.inner_text("[data-testid=count-messages]") == str(sent), 60, "every message counted")
        until(page, lambda: page.inner_text("[data-testid=count-scored]") == str(sent), 60, "every chart scored")
        total_alerts = len(read(platform, "sepsis.alerts", len(alerts), timeout=5))
        until(page, lambda: page.inner_text("[data-testid=count-alerts]") == str(total_alerts), 60, "the alerts")
        until(page, lambda: len(page.query_selector_all("[data-panel] tbody tr")) > 0, 30, "alert rows")
        until(page, lambda: len(page.query_selector_all("[data-panel] svg rect")) > 0, 30, "a chart")
        text = page.inner_text("body")
        assert "sim-" not in text and "Patient/" not in text  # identifiers never reach the board
        page.screenshot(path=str(ARTIFACTS / "app-board-sepsis.png"), full_page=True)
        assert errors == []
