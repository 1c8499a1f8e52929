"""The fraud app's board in a real browser (Debian's headless Chromium via Playwright, as the portal's tests):
after a replay of simulated payments the counters agree with what the function decided, the latest decisions
are listed, and the charts are drawn."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kawa.apps.fraud.labels import chargebacks
from kawa.apps.fraud.pipeline import build_pipeline
from kawa.apps.fraud.plugin import plugin
from kawa.apps.fraud.replay import Replay
from kawa.apps.fraud.settings import FraudSettings
from kawa.apps.fraud.sim import Simulation
from kawa.apps.runtime import start_app
from tests.apps.fraud.test_app_demo import Tails, amount_scorer, wait_for
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)
from tests.portal.test_browser_board import until


def test_the_fraud_board_shows_the_decisions(small_sim: Simulation, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    tx = small_sim.tx.take(np.flatnonzero((small_sim.tx.day < 3) & (small_sim.tx.customer_id < 40)))
    s = FraudSettings(capacity=3, explore=0.05, explore_capacity=1, first_threshold=0.3, block_at=0.9)
    with portal_served(tmp_path / ".kawa", "fay", "data-scientist", sample_interval_s=0.3) as server:
        platform = server.platform
        tails = Tails(platform.log)
        try:
            functions = lambda settings, config: build_pipeline(settings, scorer=amount_scorer).app  # noqa: E731
            start_app(platform, replace(plugin, functions=functions), s.model_dump())
            tails.open(s.decisions_topic)
            stats = Replay(platform.log, s, tx, chargebacks(tx, median_days=1, seed=0), speed=float("inf"),
                           corrupt=0.0, seed=4).run()  # fmt: skip
            wait_for(lambda: len(tails(s.decisions_topic)) >= stats.payments, 120)
            actions = Counter(json.loads(r.value or b"{}")["action"] for r in tails(s.decisions_topic))
            ARTIFACTS.mkdir(exist_ok=True)
            page, errors = watched_page(browser, 1400, 1100)
            log_in(page, server.url, "/apps/fraud", "fay")
            until(page, lambda: page.inner_text("[data-testid=count-transactions]") == str(stats.payments), 60,
                  "every payment counted")  # fmt: skip
            assert page.inner_text("[data-testid=count-blocked]") == str(actions["block"])
            assert page.inner_text("[data-testid=count-investigated]") == str(actions["investigate"])
            assert page.inner_text("[data-testid=count-passed]") == str(actions["pass"])
            until(page, lambda: len(page.query_selector_all("#panel-recent tbody tr")) > 0, 30, "decision rows")
            assert any(a in page.inner_text("#panel-recent") for a in ("pass", "block", "investigate"))
            until(page, lambda: len(page.query_selector_all("#panel-by_action svg rect")) > 0, 30, "a chart")
            assert page.query_selector("nav a[href='/apps/fraud']") is not None
            page.screenshot(path=str(ARTIFACTS / "app-board-fraud.png"), full_page=True)
            assert errors == []
        finally:
            tails.close()
