"""The experiments API and page: list, status per arm from allocation records (units, SRM), stop; the page's
allocation chart in a real browser (Debian's headless Chromium via Playwright, as test_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.evaluation.assignment import assign
from kawa.evaluation.spec import Arm, ExperimentSpec
from kawa.functions.types import Allocation, allocating
from kawa.ml.prediction_log import PredictionLogger
from kawa.platform import Platform
from tests.portal.conftest import PASSWORD, bearer, make_config
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)
from tests.portal.test_browser_board import until

SPEC = ExperimentSpec(
    name="alerting", model="sepsis", unit="patient", salt="w1", primary_metric="sepsis_6h",
    maturity_window_s=6 * 3600, metric_kind="proportion", horizon=5000,
    arms=(Arm("shown", 0.8, model="sepsis@champion"), Arm("silent", 0.2, holdout=True)),
)  # fmt: skip


def allocations(platform: Platform, units: int, *, broken: bool = False) -> dict[str, int]:
    """Allocation records as a function serving the experiment writes them; ``broken`` logs every unit as shown."""
    logger = PredictionLogger(platform.log, platform.config.ml.predictions_topic)
    counts = {"shown": 0, "silent": 0}
    try:
        for n in range(units):
            unit = f"pt-{n}"
            arm = "shown" if broken else assign(unit, SPEC.salt, [("shown", 0.8), ("silent", 0.2)]).arm
            counts[arm] += 1
            allocation = Allocation(SPEC.name, arm, SPEC.weight_of(arm), unit, arm == "shown", SPEC.spec_hash())
            with allocating(allocation):
                logger.record("sepsis", 3, np.zeros((1, 4)), np.array([0.1]), 0.002)
    finally:
        logger.close()
    return counts


def test_the_api_lists_shows_and_stops(client: Any, tokens: Any, portal: Any) -> None:
    from kawa.portal.permissions import Role

    admin, viewer = bearer(tokens[Role.ADMIN]), bearer(tokens[Role.VIEWER])
    assert client.get("/api/experiments", headers=viewer).json() == []
    created = client.post("/api/experiments", json={"spec": SPEC.to_dict()}, headers=admin)
    assert created.status_code == 201 and created.json()["spec_hash"] == SPEC.spec_hash()
    assert client.post("/api/experiments", json={"spec": SPEC.to_dict()}, headers=admin).status_code == 409
    bad = client.post("/api/experiments", json={"spec": {**SPEC.to_dict(), "alpha": 2}}, headers=admin)
    assert bad.status_code == 422 and "alpha" in bad.json()["detail"]
    counts = allocations(portal.platform, 200)
    status = client.get("/api/experiments/alerting", headers=viewer).json()
    assert {a["arm"]: a["units"] for a in status["arms"]} == counts
    assert status["sample_ratio_mismatch"] is False and status["arms"][0]["versions"] == [3]
    assert client.get("/api/experiments/nope", headers=viewer).status_code == 404
    stopped = client.post("/api/experiments/alerting/stop", json={"reason": "enough"}, headers=admin)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert client.get("/api/experiments", headers=viewer).json()[0]["reason"] == "enough"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    from kawa.portal import serve

    platform = Platform(make_config(tmp_path / ".kawa"))
    server = serve(platform)
    try:
        assert server.portal is not None
        server.portal.users.add_user("sam", "data-scientist", PASSWORD)
        yield server
    finally:
        server.stop()
        platform.stop()


def test_the_page_draws_the_split_flags_a_mismatch_and_stops(served: Any, browser: Any) -> None:  # noqa: F811
    server = served
    server.portal.experiments.create(SPEC.to_dict())
    allocations(server.platform, 300, broken=True)  # every unit logged as shown: the split is broken
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/login?next=/experiments")
    page.fill("input[name=username]", "sam")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/experiments")
    assert page.query_selector("nav a[href='/experiments']") is not None
    assert page.inner_text("[data-experiment=alerting]").count("running") == 1
    # The chart: a planned and an observed bar per arm, widths in proportion to the shares.
    width = {(r.get_attribute("data-arm"), r.get_attribute("data-kind")): float(r.get_attribute("width") or 0)
             for r in page.query_selector_all("[data-testid=allocation-chart] rect")}  # fmt: skip
    assert width[("shown", "planned")] == pytest.approx(4 * width[("silent", "planned")])
    assert width[("shown", "observed")] > 0 and width[("silent", "observed")] == 0
    assert "Sample ratio mismatch" in page.inner_text("[data-testid=srm]")
    assert page.inner_text("[data-testid=arms] tr[data-arm=shown]").split()[2] == "300"  # 300 units shown
    page.screenshot(path=str(ARTIFACTS / "experiments.png"), full_page=True)
    page.fill("input[name=reason]", "logging is broken")
    page.click("[data-testid=stop-experiment]")
    until(page, lambda: "stopped: logging is broken" in page.inner_text("body"), 30, "the stop is confirmed")
    assert page.query_selector("[data-testid=stop-experiment]") is None
    assert server.portal.experiments.store.get("alerting").reason == "logging is broken"
    assert errors == []
