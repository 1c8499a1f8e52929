"""The loop's timeline in the API and in a real browser (Debian's headless Chromium via Playwright): one episode
per candidate, each node opening its evidence, refused triggers listed apart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.log.base import TopicSpec
from kawa.platform import Platform
from kawa.retrain.controller import DECISION, DONE, INPUT, LOOP_TOPIC, write_entry
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.conftest import bearer
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)

MODEL = "fraud"


def loop_ran(platform: Platform) -> None:
    """What the controller records for one promoted candidate, one rejected one and one refused trigger."""
    platform.log.create_topic(TopicSpec(LOOP_TOPIC), exist_ok=True)
    producer = platform.log.producer()
    entries: list[tuple[str, dict[str, Any], float]] = [
        (INPUT, {"event": {"type": "Alert", "id": "alert-1", "at": 100.0, "kind": "drift"}}, 100.0),
        (DONE, {"action": 0, "kind": "Train", "job": "fraud-retrain-1", "trigger": "alert-1", "window_s": 60}, 101.0),
        (INPUT, {"event": {"type": "Alert", "id": "alert-2", "at": 110.0, "kind": "drift"}}, 110.0),
        (DONE, {"action": 1, "kind": "Skip", "trigger": "alert-2", "reason": "a candidate is in flight"}, 110.0),
        (INPUT, {"event": {"type": "TrainingDone", "id": "job-1", "at": 150.0, "job": "fraud-retrain-1", "version": 7,
                           "candidate_metric": 0.41, "champion_metric": 0.33, "error": None}}, 150.0),
        (DONE, {"action": 2, "kind": "StartCanary", "version": 7, "experiment": "fraud-canary-v7"}, 151.0),
        (INPUT, {"event": {"type": "Evaluated", "id": "ev-1", "at": 400.0, "experiment": "fraud-canary-v7",
                           "kind": "stop-efficacy", "arm": "candidate", "record_ok": True}}, 400.0),
        (DONE, {"action": 3, "kind": "Promote", "version": 7, "reason": "won its canary fraud-canary-v7",
                "experiment": "fraud-canary-v7"}, 401.0),
        (DECISION, {"decision": "promote", "version": 7, "reason": "won its canary fraud-canary-v7",
                    "trigger": "alert-1", "offline": {"candidate": 0.41, "champion": 0.33},
                    "evaluation": {"decision": {"kind": "stop-efficacy", "arm": "candidate"}}}, 401.0),
        (INPUT, {"event": {"type": "Alert", "id": "alert-3", "at": 9000.0, "kind": "drift"}}, 9000.0),
        (DONE, {"action": 4, "kind": "Train", "job": "fraud-retrain-2", "trigger": "alert-3", "window_s": 60}, 9001.0),
        (INPUT, {"event": {"type": "TrainingDone", "id": "job-2", "at": 9050.0, "job": "fraud-retrain-2", "version": 8,
                           "candidate_metric": 0.2, "champion_metric": 0.41, "error": None}}, 9050.0),
        (DONE, {"action": 5, "kind": "Reject", "version": 8, "reason": "offline: the candidate trails"}, 9050.0),
    ]  # fmt: skip
    try:
        for kind, data, at in entries:
            write_entry(producer, MODEL, kind, data, at)
    finally:
        producer.close()


def test_the_api_gives_episodes_and_refused_triggers(client: Any, tokens: Any, portal: Any) -> None:
    from kawa.portal.permissions import Role

    viewer = bearer(tokens[Role.VIEWER])
    assert client.get("/api/loop", headers=viewer).json() == []
    loop_ran(portal.platform)
    assert client.get("/api/loop", headers=viewer).json() == [MODEL]
    body = client.get(f"/api/loop/{MODEL}", headers=viewer).json()
    first, second = body["episodes"]
    assert [n["kind"] for n in first["nodes"]] == ["trigger", "training", "training", "offline", "canary", "evaluation",
                                                   "decision", "record"]  # fmt: skip
    assert first["outcome"] == "promoted" and first["version"] == 7 and first["experiment"] == "fraud-canary-v7"
    assert first["nodes"][-1]["evidence"]["offline"] == {"candidate": 0.41, "champion": 0.33}
    assert second["outcome"] == "rejected" and second["nodes"][-1]["status"] == "failed"
    assert [n["summary"] for n in body["skipped"]] == ["monitor alert: drift — not acted on: a candidate is in flight"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    with portal_served(tmp_path / ".kawa", "mia", "viewer") as server:
        yield server


def test_the_timeline_page_opens_each_nodes_evidence(served: Any, browser: Any) -> None:  # noqa: F811
    loop_ran(served.platform)
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1300, 1000)
    log_in(page, served.url, "/loop", "mia")
    assert page.query_selector("nav a[href='/loop']") is not None
    episodes = page.query_selector_all("[data-testid=episode]")
    assert [e.get_attribute("data-outcome") for e in episodes] == ["rejected", "promoted"]  # newest first
    promoted = episodes[1]
    kinds = [n.get_attribute("data-kind") for n in promoted.query_selector_all("li.node")]
    assert kinds[0] == "trigger" and kinds[-2:] == ["decision", "record"]
    evidence = promoted.query_selector("li.node[data-kind=record] pre")
    assert evidence is not None and not evidence.is_visible()  # closed until the node is opened
    promoted.query_selector("li.node[data-kind=record] summary").click()  # type: ignore[union-attr]
    assert evidence.is_visible() and '"candidate": 0.41' in evidence.inner_text()
    assert promoted.query_selector("a[href='/experiments?experiment=fraud-canary-v7']") is not None
    assert "a candidate is in flight" in page.inner_text("[data-testid=skipped]")
    page.screenshot(path=str(ARTIFACTS / "loop.png"), full_page=True)
    assert errors == []
