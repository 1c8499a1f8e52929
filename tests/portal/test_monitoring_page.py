"""The monitoring page in the API and in a real browser (Debian's headless Chromium via Playwright): the drift heat
map turns red where a planted shift is, the score chart has its reference line, matured AUROC is drawn with its
interval band per cohort, the label-free estimate covers the gap, and the alert shows with its evidence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.log.base import TopicSpec
from kawa.monitor.join import JoinConfig
from kawa.monitor.outcomes import publish
from kawa.monitor.records import OutcomeEvent
from kawa.monitor.service import MonitorConfig, MonitorService
from kawa.platform import Platform
from tests.monitor.test_service import MODEL, decisions, reference, write
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.conftest import bearer
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)
from tests.waiting import wait_for


def monitored(platform: Platform) -> None:
    """1,500 stationary decisions, then 1,500 with feature ``a`` shifted by 1 sd; outcomes for most of them."""
    records = decisions(1500, seed=1) + decisions(1500, seed=2, start=1500, shift=1.0)
    write(platform.log, records)
    rng = np.random.default_rng(3)
    platform.log.create_topic(TopicSpec("outcomes", 1, retention_ms=None), exist_ok=True)
    producer = platform.log.producer()
    for r in records[:2800]:
        label = int(rng.uniform() < (r.score or 0))
        publish(producer, "outcomes", OutcomeEvent(r.decided_at + 30, ref=r.ref, label=label).to_event("t"))
    producer.close()
    config = MonitorConfig(MODEL, pane_s=300.0, panes=1, window_size=250, sequential_arl0=1e6, shift=1.0,
                           sequential_mode="mean", join=JoinConfig(horizon=60.0), cohort_s=600.0, bootstrap=30)
    profile = reference()
    service = MonitorService(platform.log, config, lambda version: profile).start()
    service.step()
    service.close()


def test_the_api_gives_status_windows_and_performance(client: Any, tokens: Any, portal: Any) -> None:
    from kawa.portal.permissions import Role

    viewer = bearer(tokens[Role.VIEWER])
    assert client.get("/api/monitoring", headers=viewer).json() == []
    monitored(portal.platform)
    # the source reads the alerts topic at most every few seconds: the new events show within that
    wait_for(lambda: client.get("/api/monitoring", headers=viewer).json() == [MODEL], timeout=30,
             what="the monitored model in the API")  # fmt: skip
    body = client.get(f"/api/monitoring/{MODEL}", headers=viewer).json()
    (version,) = body["status"]["versions"]
    assert version["alerts"] >= 1 and any("a" in a.get("features", []) for a in version["latest_alerts"])
    windows = body["windows"]["1"]
    assert len(windows) == 9 and windows[-1]["psi"]["a"] > 0.25 > windows[0]["psi"]["a"]  # the 10th is open
    assert len(body["performance"]) == 5 and all("auroc" in p["metrics"] for p in body["performance"])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    with portal_served(tmp_path / ".kawa", "dee", "data-scientist") as server:
        yield server


def test_the_page_draws_the_heat_map_the_score_and_the_performance(served: Any, browser: Any) -> None:  # noqa: F811
    monitored(served.platform)
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1400, 1000)
    log_in(page, served.url, "/monitoring", "dee")
    assert page.query_selector("nav a[href='/monitoring']") is not None
    levels = page.eval_on_selector_all("[data-testid=drift-heatmap] rect[data-feature=a]",
                                       "rs => rs.map(r => r.getAttribute('data-level'))")  # fmt: skip
    assert len(levels) == 9 and levels[0] == "ok" and levels[-1] == "bad"  # the shift, in red, at the right
    others = page.eval_on_selector_all("[data-testid=drift-heatmap] rect[data-feature=b]",
                                       "rs => rs.map(r => r.getAttribute('data-level'))")  # fmt: skip
    assert "bad" not in others
    assert page.query_selector("[data-testid=score-reference]") is not None
    assert len(page.query_selector_all("[data-testid=score-chart] rect")) == 10
    line = page.query_selector("[data-testid=performance-chart] polyline")
    assert line is not None and line.get_attribute("data-points") == "5"
    assert page.query_selector("[data-testid=performance-chart] polygon.band") is not None
    assert "assumes no concept drift" in page.inner_text("[data-testid=label-free]")
    assert "a" in page.inner_text("[data-testid=alerts]")
    page.screenshot(path=str(ARTIFACTS / "monitoring.png"), full_page=True)
    assert errors == []
