"""The audit page: admins see who did what, filter it, and see the last day drawn per hour (Chromium); nobody
else sees it. The hourly bars are a pure function, checked against counts made by hand."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kawa.audit.record import AuditRecord
from kawa.portal.web.audit_page import hourly
from tests.portal.browsing import log_in, portal_served, watched_page
from tests.portal.conftest import PASSWORD
from tests.portal.test_browser import ARTIFACTS, browser  # noqa: F401  (the fixture)


def _record(at: datetime, result: str = "ok", user: str = "ada") -> AuditRecord:
    return AuditRecord(user=user, action="users.manage", resource="/api/users", result=result, request_id="r",
                       time=at)  # fmt: skip


def test_hourly_bars_count_each_hour_and_the_busiest_fills_the_chart() -> None:
    now = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
    records = [_record(now - timedelta(minutes=5)), _record(now - timedelta(minutes=20), "denied"),
               _record(now - timedelta(minutes=25), "denied"), _record(now - timedelta(hours=3), "error"),
               _record(now - timedelta(hours=30))]  # the last is older than the chart: left out  # fmt: skip
    bars = hourly(records, now, hours=24, height=100.0)
    assert len(bars) == 24 and bars[-1].start == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert bars[0].start == datetime(2026, 12, 3, 11, tzinfo=UTC)
    assert bars[-1].counts == {"ok": 1, "denied": 2, "error": 0} and bars[-4].counts["error"] == 1
    assert sum(b.total for b in bars) == 4
    assert bars[-1].segments == (("ok", 66.67, 33.33), ("denied", 0.0, 66.67))  # 3 records: the full height
    assert bars[-4].segments == (("error", 66.67, 33.33),) and bars[0].segments == ()


def _post(url: str, token: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json",
                                              "authorization": f"Bearer {token}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    with portal_served(tmp_path / ".kawa", "ada", "admin") as server:
        server.portal.users.add_user("vic", "viewer", PASSWORD)
        yield server


def test_admins_see_filter_and_chart_the_trail_and_nobody_else_sees_it(served: Any, browser: Any) -> None:  # noqa: F811
    viewer_token = served.portal.users.create_token("vic")[1]
    for name in ("x1", "x2"):  # a viewer may not manage users: two refusals on record
        assert _post(f"{served.url}/api/users", viewer_token, {"name": name, "role": "viewer"}) == 403
    admin_token = served.portal.users.create_token("ada")[1]
    assert _post(f"{served.url}/api/users", admin_token, {"name": "newbie", "role": "viewer"}) == 201
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = watched_page(browser, 1200, 1000)
    log_in(page, served.url, "/audit", "ada")
    assert page.query_selector("nav a[href='/audit']") is not None
    rows = page.query_selector_all("[data-testid=audit-table] tbody tr")
    seen = [(r.get_attribute("data-user"), r.get_attribute("data-result")) for r in rows]
    assert seen.count(("vic", "denied")) == 2 and ("ada", "ok") in seen
    assert (rows[0].get_attribute("data-user"), rows[0].get_attribute("data-action")) == ("ada", "login")  # newest
    # first: the admin's own login, on record under the name it logged in as
    hour = page.query_selector_all("[data-testid=audit-chart] g")[-1]  # this hour
    assert int(hour.get_attribute("data-total") or 0) == len(rows) and hour.get_attribute("data-denied") == "2"
    assert hour.query_selector("rect.audit.denied") is not None and hour.query_selector("rect.audit.ok") is not None
    page.select_option("select[name=result]", "denied")
    page.click("[data-testid=audit-filter] button")
    page.wait_for_url("**/audit?*result=denied*")
    rows = page.query_selector_all("[data-testid=audit-table] tbody tr")
    assert [(r.get_attribute("data-user"), r.get_attribute("data-result")) for r in rows] == [("vic", "denied")] * 2
    assert "2 records match" in page.inner_text("[data-testid=audit-count]")
    page.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)
    assert errors == []

    other, _ = watched_page(browser)
    log_in(other, served.url, "/", "vic")
    assert other.query_selector("nav a[href='/audit']") is None
    answer = other.goto(f"{served.url}/audit")
    assert answer is not None and answer.status == 403
