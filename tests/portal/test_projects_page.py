"""The projects page and API: only the projects a user may view, each quota beside its jobs' use, drawn as bars
in a real browser (Debian's headless Chromium via Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.ml.jobs import JobSpec
from kawa.ml.jobs.policy import MiB, Placement
from kawa.portal.permissions import Role
from kawa.portal.web.projects_page import amount, bar_percent
from kawa.projects.registry import ProjectRegistry
from kawa.projects.templates import Quota
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.conftest import bearer
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)


def start_a_job(portal: Any, project: str, cpu: float) -> None:
    """Queue a job in ``project`` and mark it started, as a scheduler taking it would (no process runs)."""
    scheduler = portal.jobs.scheduler
    job = scheduler.submit(JobSpec.build("python -c pass", cpu=cpu, project=project))
    scheduler.store.claim(lambda waiting, active: [Placement(w.id, ()) for w in waiting if w.id == job.id])


def teams(portal: Any, member: str) -> ProjectRegistry:
    registry = ProjectRegistry.in_home(portal.config.home)
    registry.create("team-a", "xray-pipeline", owner=None)
    registry.add_member("team-a", member, Role.DATA_SCIENTIST)
    registry.set_quota("team-a", cpus=4, concurrent_jobs=2)
    registry.create("team-b")
    store = portal.platform.store
    store.create_bucket("team-a--xray-images")
    store.put("team-a--xray-images", "scan.dcm", b"x" * (3 * MiB))
    return registry


def test_members_see_their_projects_and_default_and_admins_see_all(client: Any, tokens: Any, portal: Any) -> None:
    teams(portal, "viewer-user")
    start_a_job(portal, "team-a", 1.5)
    viewer, admin = bearer(tokens[Role.VIEWER]), bearer(tokens[Role.ADMIN])
    mine = client.get("/api/projects", headers=viewer).json()
    assert [(p["name"], p["role"]) for p in mine] == [("default", "viewer"), ("team-a", "data-scientist")]
    quota = {q["field"]: q for q in mine[1]["quota"]}
    assert quota["cpus"] == {"field": "cpus", "limit": 4.0, "use": 1.5, "enforced": True}
    assert quota["concurrent_jobs"]["use"] == 1.0 and quota["storage_bytes"]["enforced"] is True
    assert quota["function_replicas"]["enforced"] is True
    assert quota["storage_bytes"]["use"] == 3 * MiB  # what team-a's buckets hold, measured by the store
    assert quota["function_replicas"]["use"] is None  # not measured: shown as such, never as zero
    assert {q["field"]: q["limit"] for q in mine[0]["quota"]}["cpus"] is None  # default: no limits
    assert [(p["name"], p["role"]) for p in client.get("/api/projects", headers=admin).json()] == [
        ("default", "admin"), ("team-a", None), ("team-b", None)]  # fmt: skip
    # Another team's project is not found, exactly like one that does not exist.
    hidden, missing = (client.get(f"/api/projects/{n}", headers=viewer) for n in ("team-b", "nope"))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace("team-b", "X") == missing.json()["detail"].replace("nope", "X")
    assert client.get("/api/projects/team-a", headers=viewer).json()["namespace"] == "kawa-team-a"
    assert client.get("/api/projects").status_code == 401


def test_function_replicas_are_shown_as_this_hosts_functions_hold_them(
    client: Any, tokens: Any, portal: Any, platform: Any
) -> None:
    from kawa.functions.app import App
    from kawa.functions.host import FunctionHost
    from kawa.log.base import TopicSpec
    from tests.waiting import wait_for

    teams(portal, "viewer-user")
    app = App("rep")
    for topic, name, floor in (("team-a.orders", "a", 2), ("team-a.more", "b", 1), ("orders", "plain", 1)):
        platform.log.create_topic(TopicSpec(topic), exist_ok=True)
        app.function(topic=topic, name=name, min_scale=floor)(lambda event, ctx: None)
    host = FunctionHost(app, log=platform.log, config=platform.config)
    host.start()
    platform.functions_host = host
    try:
        def replicas() -> dict[str, Any]:
            found = client.get("/api/projects", headers=bearer(tokens[Role.ADMIN])).json()
            return {p["name"]: {q["field"]: q for q in p["quota"]}["function_replicas"]["use"] for p in found}

        wait_for(lambda: replicas()["team-a"] == 3.0, what="team-a's 3 replicas")
        assert replicas() == {"default": 1.0, "team-a": 3.0, "team-b": 0.0}
    finally:
        platform.functions_host = None
        host.stop()


def test_bars_and_amounts() -> None:
    assert bar_percent(1.5, 4) == 38 and bar_percent(9, 4) == 100 and bar_percent(0, 0) == 0
    assert bar_percent(1, 0) == 100 and bar_percent(None, 4) is None and bar_percent(1, None) is None
    assert amount("storage_bytes", Quota().storage_bytes) == "10 GiB" and amount("memory_mb", 8192) == "8,192 MiB"
    assert amount("storage_bytes", 3 * MiB) == "3 MiB" and amount("storage_bytes", 999) == "999 bytes"
    assert amount("cpus", None) == "no limit"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    with portal_served(tmp_path / ".kawa", "mia", "viewer") as server:
        yield server


def test_the_page_draws_each_quota_as_a_bar_of_use_against_limit(served: Any, browser: Any) -> None:  # noqa: F811
    teams(served.portal, "mia")
    start_a_job(served.portal, "team-a", 1.5)
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1100, 900)
    log_in(page, served.url, "/projects", "mia")
    assert page.query_selector("nav a[href='/projects']") is not None
    sections = page.query_selector_all("[data-testid=project]")
    assert [s.get_attribute("data-project") for s in sections] == ["default", "team-a"]  # not team-b
    team = sections[1]
    cpus = team.query_selector("tr[data-field=cpus]")
    assert cpus is not None and cpus.get_attribute("data-percent") == "38"
    bar = cpus.query_selector("rect.observed")
    assert bar is not None and bar.get_attribute("width") == "84" and bar.is_visible()  # 38 % of 220 px
    assert "1.5 of 4" in cpus.inner_text()
    storage = team.query_selector("tr[data-field=storage_bytes]")  # 3 MiB of the xray-pipeline's 50 GiB
    assert storage is not None and "3 MiB of 50 GiB" in storage.inner_text()
    assert "not enforced" not in storage.inner_text() and storage.get_attribute("data-percent") == "0"
    replicas = team.query_selector("tr[data-field=function_replicas]")
    assert replicas is not None and replicas.query_selector("rect.observed") is None  # no use measured: no bar
    unlimited = sections[0].query_selector("tr[data-field=cpus]")
    assert unlimited is not None and unlimited.query_selector("svg") is None  # no limit: nothing to fill
    assert "of no limit" in unlimited.inner_text()
    page.screenshot(path=str(ARTIFACTS / "projects.png"), full_page=True)
    assert errors == []


def test_a_member_signing_in_lands_on_a_ready_project_page(served: Any, browser: Any) -> None:  # noqa: F811
    from tests.portal.conftest import PASSWORD

    teams(served.portal, "mia")
    page, errors = watched_page(browser, 1100, 1200)
    page.goto(f"{served.url}/login")  # no target: where does a member land?
    page.fill("input[name=username]", "mia")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{served.url}/projects/team-a")
    assert page.inner_text("[data-testid=project-name]") == "team-a"
    shell = page.inner_text("[data-testid=shell-config]")
    assert "export KAWA_PROJECT=team-a" in shell and "kawa use team-a" in shell
    assert 'project="team-a"' in page.inner_text("[data-testid=notebook-config]")
    backend = [c.inner_text() for c in page.query_selector_all("[data-testid=resources] tr[data-kind=bucket] code")]
    assert backend == ["team-a--xray-images", "team-a--xray-images-processed", "team-a--xray-images-anonymized"]
    assert page.query_selector("tr[data-field=concurrent_jobs] svg") is not None  # the quota bars, here too
    assert "mia" in page.inner_text("[data-testid=members]")
    page.screenshot(path=str(ARTIFACTS / "project.png"), full_page=True)
    hidden = page.goto(f"{served.url}/projects/team-b")  # another team's: not found, like a missing one
    assert hidden is not None and hidden.status == 404
    assert errors == []
