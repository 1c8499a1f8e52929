"""The experiments API and page: list, status per arm from allocation records (units, SRM), stop; the page's
allocation chart in a real browser (Debian's headless Chromium via Playwright, as test_browser.py); and the
evidence: decisions and delayed outcomes simulated onto the log, the Evaluator run to a decision, then the looks
and the decision record through the API and, in Chromium, the interval chart (a band per challenger, a point per
look, the zero line) and the decision record's reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kawa.evaluation.assignment import assign
from kawa.evaluation.decision import ArmStats, DecisionRecord, LookData, recompute
from kawa.evaluation.service import Evaluator
from kawa.evaluation.spec import Arm, ExperimentSpec, Guardrail
from kawa.functions.types import Allocation, allocating
from kawa.ml.prediction_log import PredictionLogger
from kawa.platform import Platform
from tests.evaluation.test_service import MATURITY, simulate
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.conftest import bearer
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
    with portal_served(tmp_path / ".kawa", "sam", "data-scientist") as server:
        yield server


def test_the_page_draws_the_split_flags_a_mismatch_and_stops(served: Any, browser: Any) -> None:  # noqa: F811
    server = served
    server.portal.experiments.create(SPEC.to_dict())
    allocations(server.platform, 300, broken=True)  # every unit logged as shown: the split is broken
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1300, 900)
    log_in(page, server.url, "/experiments", "sam")
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


THREE_ARMS = ExperimentSpec(
    name="canary", model="risk", unit="card", salt="canary-salt", primary_metric="caught", metric_kind="proportion",
    maturity_window_s=MATURITY, horizon=3000, alpha=0.05,
    arms=(Arm("champion", 0.4, model="risk@champion"), Arm("better", 0.3, model="risk@better"),
          Arm("same", 0.3, model="risk@same")),
)  # fmt: skip
RATES = {"champion": 0.30, "better": 0.42, "same": 0.30}


def evaluate_to_decision(platform: Platform, spec: ExperimentSpec, units: int = 2400, seed: int = 11) -> Evaluator:
    """Simulate ``units`` decisions with delayed outcomes, then look every 10 s of watermark (100 more units
    matured) until a decision."""
    times = simulate(platform.log, spec, units, RATES, seed=seed)
    evaluator = Evaluator(platform.log, spec.name).start()
    for watermark in np.arange(times[0] + 20, times[-1] + MATURITY + 1, 10.0):
        evaluator.step(float(watermark))
        if evaluator.decision is not None:
            break
    return evaluator


def test_the_api_serves_every_look_and_the_decision_record(client: Any, tokens: Any, portal: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from kawa.portal.permissions import Role

    monkeypatch.setattr("kawa.portal.sources.experiments.EVALUATION_TTL_S", 0.0)  # read the topic on every call
    viewer = bearer(tokens[Role.VIEWER])
    portal.experiments.create(THREE_ARMS.to_dict())
    empty = client.get("/api/experiments/canary/looks", headers=viewer).json()
    assert empty["looks"] == [] and empty["decision"] is None and empty["challengers"] == ["better", "same"]
    missing = client.get("/api/experiments/canary/record", headers=viewer)
    assert missing.status_code == 404 and "no decision yet" in missing.json()["detail"]
    evaluator = evaluate_to_decision(portal.platform, THREE_ARMS)
    try:
        decision = evaluator.decision
        assert decision is not None and decision.kind == "stop-efficacy" and decision.arm == "better"
        body = client.get("/api/experiments/canary/looks", headers=viewer).json()
        assert [lk["index"] for lk in body["looks"]] == list(range(len(evaluator.state.looks)))
        assert len(body["looks"]) >= 3
        for out, look in zip(body["looks"], evaluator.state.looks, strict=True):
            assert out["n"] == dict(look.n) and out["srm_p_value"] == pytest.approx(look.srm_p_value)
            for c_out, c in zip(out["comparisons"], look.comparisons, strict=True):
                assert c_out["arm"] == c.arm and c_out["estimate"] == pytest.approx(c.estimate)
                assert c_out["lower"] == (pytest.approx(c.lower) if np.isfinite(c.lower) else None)
                assert c_out["upper"] == (pytest.approx(c.upper) if np.isfinite(c.upper) else None)
        assert [lk["decision"] for lk in body["looks"][:-1]] == [None] * (len(body["looks"]) - 1)
        assert body["looks"][-1]["decision"]["kind"] == "stop-efficacy" == body["decision"]["kind"]
        assert body["decision"]["arm"] == "better" and "beats 'champion'" in body["decision"]["reason"]
        last = body["looks"][-1]["comparisons"][0]
        assert last["lower"] > 0  # the winner's interval lies above the decision boundary
        download = client.get("/api/experiments/canary/record", headers=viewer)
        assert download.status_code == 200
        assert download.headers["content-disposition"] == 'attachment; filename="canary-decision-record.json"'
        rec = DecisionRecord.from_json(json.dumps(download.json()))
        assert rec.spec_hash == THREE_ARMS.spec_hash() and rec.decision == decision
        assert rec.versions == {"champion": "1", "better": "2", "same": "2"}
        assert recompute(rec, evaluator.looks_data) == decision  # the downloaded record recomputes
    finally:
        evaluator.close()
    assert client.get("/api/experiments/canary/looks").status_code == 401
    assert client.get("/api/experiments/nope/looks", headers=viewer).status_code == 404
    assert client.get("/api/experiments/nope/record", headers=viewer).status_code == 404


def test_the_evidence_is_cached_for_a_few_seconds(portal: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import kawa.portal.sources.experiments as source

    reads: list[str] = []
    real = source.read_evaluation

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(source, "read_evaluation", counting)
    portal.experiments.create(THREE_ARMS.to_dict())
    first = portal.experiments.evaluation("canary")
    assert portal.experiments.evaluation("canary") is first and reads == ["canary"]
    monkeypatch.setattr(source, "EVALUATION_TTL_S", 0.0)
    portal.experiments.evaluation("canary")
    assert reads == ["canary", "canary"]


def test_the_page_charts_the_interval_over_looks_and_shows_the_decision_record(served: Any,
                                                                                browser: Any) -> None:  # noqa: F811
    server = served
    server.portal.experiments.create(THREE_ARMS.to_dict())
    evaluator = evaluate_to_decision(server.platform, THREE_ARMS)
    try:
        looks = len(evaluator.state.looks)
        reason = evaluator.decision.reason if evaluator.decision else ""
    finally:
        evaluator.close()
    assert looks >= 3 and "beats" in reason
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1300, 900)
    log_in(page, server.url, "/experiments?experiment=canary", "sam")
    charts = page.query_selector_all("[data-testid=interval-chart]")
    assert sorted(c.get_attribute("data-arm") or "" for c in charts) == ["better", "same"]  # one per challenger
    for chart in charts:
        arm = chart.get_attribute("data-arm")
        bands = chart.query_selector_all(f"path.band[data-arm={arm}]")
        assert len(bands) == 1 and (bands[0].get_attribute("d") or "").endswith("Z")
        assert len(chart.query_selector_all("circle.look")) == looks  # a point per look
        points = (chart.query_selector(f"polyline.estimate[data-arm={arm}]").get_attribute("points") or "").split()
        assert len(points) == looks
        zero = chart.query_selector("[data-testid=zero-line]")
        assert zero is not None and zero.bounding_box() is not None  # drawn, on screen
        box = chart.query_selector("path.band").bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 10
    # the winner's last point lies above the zero line (SVG y grows downwards), its band wholly above at the end
    better = page.query_selector("[data-testid=interval-chart][data-arm=better]")
    zero_y = float(better.query_selector("[data-testid=zero-line]").get_attribute("y1") or 0)
    last_y = float(better.query_selector_all("circle.look")[-1].get_attribute("cy") or 0)
    assert last_y < zero_y
    assert len(page.query_selector_all("[data-testid=looks] tbody tr")) == looks
    srm = page.query_selector("[data-testid=srm-chart]")
    assert len(srm.query_selector_all("circle.look")) == looks  # the SRM p-value over looks...
    gate_y = float(srm.query_selector("[data-testid=srm-gate]").get_attribute("y1") or 0)
    assert all(float(c.get_attribute("cy") or 0) > gate_y for c in srm.query_selector_all("circle.look"))  # ...passes
    assert "stop-efficacy" in page.inner_text("[data-testid=looks] tbody tr:last-child")
    record = page.inner_text("[data-testid=decision-record]")
    assert page.inner_text("[data-testid=decision-reason]") == reason
    assert "stop-efficacy" in record and THREE_ARMS.spec_hash() in record and "kawa.evaluation.decision/1" in record
    assert page.inner_text("[data-testid=record-versions]") == "champion: 1; better: 2; same: 2"
    href = page.get_attribute("[data-testid=record-download]", "href")
    assert href == "/api/experiments/canary/record"
    downloaded = page.request.get(f"{server.url}{href}")  # with the browser's session cookie
    assert downloaded.ok and downloaded.json()["spec_hash"] == THREE_ARMS.spec_hash()
    page.screenshot(path=str(ARTIFACTS / "experiments-evidence.png"), full_page=True)
    assert errors == []


def test_guardrail_values_the_srm_p_value_and_a_breach_show_per_look(client: Any, tokens: Any, portal: Any) -> None:
    from kawa.portal.permissions import Role

    guarded = ExperimentSpec(
        name="guarded", model="risk", unit="card", salt="g1", primary_metric="caught", metric_kind="proportion",
        maturity_window_s=60, horizon=2000, guardrails=(Guardrail("alert_rate", 0.3),),
        arms=(Arm("champion", 0.5, model="risk@champion"), Arm("challenger", 0.5, model="risk@challenger")),
    )  # fmt: skip
    portal.experiments.create(guarded.to_dict())
    evaluator = Evaluator(portal.platform.log, guarded.name)
    try:  # looks as the evaluator publishes them, with guardrail values its cohorts do not compute
        for k, (rate, assigned) in enumerate([(0.2, (100, 100)), (0.35, (200, 205))]):
            arms = {"champion": ArmStats(assigned[0], 0.3), "challenger": ArmStats(assigned[1], 0.31)}
            evaluator._look(LookData(arms, dict(zip(arms, assigned, strict=True)),
                                     {"alert_rate": {"champion": 0.1, "challenger": rate}}, (10.0 * k, 10.0 * k + 9)))
    finally:
        evaluator.close()
    viewer = bearer(tokens[Role.VIEWER])
    body = client.get("/api/experiments/guarded/looks", headers=viewer).json()
    assert [lk["guardrails"] for lk in body["looks"]] == [{"alert_rate": {"champion": 0.1, "challenger": r}}
                                                          for r in (0.2, 0.35)]  # fmt: skip
    assert body["looks"][0]["srm_p_value"] == 1.0 and 0 < body["looks"][1]["srm_p_value"] <= 1.0
    assert body["looks"][0]["decision"] is None and body["decision"]["kind"] == "guardrail-breach"
    assert body["decision"]["arm"] == "challenger" and "alert_rate = 0.35 is above its limit 0.3" in body[
        "decision"]["reason"]  # fmt: skip
    from kawa.evaluation.service import EVALUATIONS_TOPIC
    from kawa.portal.sources.experiments import read_evaluation

    earlier = read_evaluation(portal.platform.log, "guarded", "an-earlier-spec-hash", EVALUATIONS_TOPIC)
    assert earlier.looks == () and earlier.record is None and earlier.foreign == 3  # 2 looks + 1 decision
    html = client.get("/experiments?experiment=guarded", headers=viewer).text
    assert "<th>alert_rate</th>" in html and "champion 0.1, challenger 0.35" in html
    assert html.count('data-testid="interval-chart"') == 1 and "guardrail-breach" in html
    assert "alert_rate = 0.35 is above its limit 0.3" in html


def test_the_chart_clips_an_unbounded_interval_and_keeps_zero_in_view() -> None:
    from kawa.portal.api.experiments import look_out
    from kawa.portal.web.interval_chart import HEIGHT, TOP, interval_charts

    def one(index: int, lower: Any, upper: Any, estimate: float) -> Any:
        c = {"arm": "b", "estimate": estimate, "lower": lower, "upper": upper, "e_value": 1.0, "p_value": 1.0}
        return look_out({"index": index, "window": [0, 1], "n": {"a": 10 * index, "b": 10 * index},
                         "comparisons": [c], "srm_p_value": 1.0, "guardrails": {}})  # fmt: skip

    (single,) = interval_charts([one(0, "-inf", "inf", 0.5)], "a", ["b"])
    (p,) = single.points
    assert p.clipped and p.y_upper == TOP and p.y_lower > p.y  # unbounded: drawn to the chart's edges
    assert single.band.count("L") == 3  # one look: a narrow box, still visible
    (chart,) = interval_charts([one(0, "-inf", "inf", 2.0), one(1, 1.0, 3.0, 2.0), one(2, 1.5, 2.5, 2.0)],
                               "a", ["b"])  # fmt: skip
    assert [q.clipped for q in chart.points] == [True, False, False]
    assert TOP <= chart.points[-1].y_upper < chart.points[-1].y < chart.points[-1].y_lower < chart.zero_y < HEIGHT
    assert len(chart.line.split()) == 3 and chart.band.startswith("M") and chart.band.endswith("Z")
