"""Portal sign-in through a real OpenID Connect provider process, in Chromium: the authorization-code flow with
PKCE, the ID token checked (keys, issuer, audience, nonce), the IdP's groups as project roles, and the refusals.

The provider is ``oidc-provider-mock`` (PyPI), an OpenID provider server built on Authlib that the test starts as
its own process on a free port: discovery, JWKS, an authorization form, a token endpoint. It signs its ID tokens
with its own RSA key; Kawa reads everything from its discovery document, as it would from Keycloak.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kawa.audit.trail import read_audit
from kawa.projects.registry import ProjectRegistry
from tests.portal.browsing import portal_served, watched_page
from tests.portal.test_browser import browser  # noqa: F401  (the fixture)
from tests.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _discovery(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/.well-known/openid-configuration", timeout=2) as answer:
            return dict(json.load(answer))
    except (OSError, ValueError):
        return None


class Idp:
    """The provider process: its issuer URL, and its users with the claims their ID tokens will carry."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "idp.log").open("w")
        self.process = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "--port", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip

    def user(self, sub: str, **claims: Any) -> None:
        request = urllib.request.Request(f"{self.url}/users/{sub}", data=json.dumps(claims).encode(), method="PUT",
                                         headers={"content-type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 204

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[Idp]:
    provider = Idp(tmp_path)
    try:
        wait_for(lambda: provider.process.poll() is not None or _discovery(provider.url), 60, "the OpenID provider")
        assert provider.process.poll() is None, (tmp_path / "idp.log").read_text()
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def served(tmp_path: Path, idp: Idp) -> Iterator[Any]:
    oidc = {"issuer": idp.url, "client_id": "kawa-portal", "client_secret": "portal-secret",
            "group_roles": {"xray-ds": "team-a:data-scientist", "platform": "default:admin"}}  # fmt: skip
    with portal_served(tmp_path / ".kawa", "dana", "viewer", oidc=oidc) as server:
        registry = ProjectRegistry.in_home(server.portal.config.home)
        registry.create("team-a", "xray-pipeline", owner=None)
        registry.create("team-b")
        yield server


def on_the_login_page(url: str) -> bool:
    return urllib.parse.urlsplit(url).path == "/login"


def _sign_in_at_the_provider(page: Any, portal_url: str, idp: Idp, sub: str, start: str = "/login") -> str:
    """From the portal's login page through the provider's form as ``sub``; the provider's authorization URL."""
    page.goto(f"{portal_url}{start}")
    page.click("[data-testid=sso-login]")
    page.wait_for_url(f"{idp.url}/oauth2/authorize*")
    authorize = str(page.url)
    page.fill("input[name=sub]", sub)
    page.click("button[type=submit]:not([name=action])")
    return authorize


def test_a_member_signs_in_at_the_provider_and_lands_on_their_project(served: Any, idp: Idp,
                                                                      browser: Any) -> None:  # noqa: F811  # fmt: skip
    idp.user("u-1001", preferred_username="ida", email="ida@example.org", groups=["xray-ds"])
    page, errors = watched_page(browser, 1100, 1000)
    authorize = _sign_in_at_the_provider(page, served.url, idp, "u-1001")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43  # PKCE
    assert query["client_id"] == ["kawa-portal"] and query["nonce"][0] and query["state"][0]
    assert query["redirect_uri"] == [f"{served.url}/login/callback"]
    page.wait_for_url(f"{served.url}/projects/team-a")  # the IdP group made ida a member of team-a
    assert page.inner_text("[data-testid=project-name]") == "team-a"
    me = page.evaluate("fetch('/api/me').then(r => r.json())")
    assert (me["name"], me["role"]) == ("ida", "viewer")  # default: no group maps there
    projects = page.evaluate("fetch('/api/projects').then(r => r.json())")
    assert [(p["name"], p["role"]) for p in projects] == [("default", "viewer"), ("team-a", "data-scientist")]
    assert page.evaluate("fetch('/api/projects/team-b').then(r => r.status)") == 404
    # The user is on record as signed on by the provider: no password logs it in, and the sign-on is audited.
    user = served.portal.users.get_user("ida")
    assert user.role.value == "viewer"
    from kawa.errors import InvalidCredentials

    with pytest.raises(InvalidCredentials):
        served.portal.users.authenticate("ida", "sso:" + idp.url)
    records = [r for r in read_audit(served.portal.platform.log) if r.action == "sign-on"]
    assert [(r.user, r.result) for r in records] == [("ida", "ok")]
    assert errors == []


def test_a_second_sign_in_takes_the_roles_the_groups_give_now(served: Any, idp: Idp,
                                                              browser: Any) -> None:  # noqa: F811  # fmt: skip
    idp.user("u-7", preferred_username="root", groups=["platform"])
    page, _ = watched_page(browser)
    _sign_in_at_the_provider(page, served.url, idp, "u-7", "/login?next=/topics")
    page.wait_for_url(f"{served.url}/topics")  # the page asked for first
    assert page.evaluate("fetch('/api/me').then(r => r.json())")["role"] == "admin"
    idp.user("u-7", preferred_username="root", groups=[])  # removed from the group at the provider
    second = browser.new_page()
    _sign_in_at_the_provider(second, served.url, idp, "u-7")
    second.wait_for_url(f"{served.url}/")
    assert second.evaluate("fetch('/api/me').then(r => r.json())")["role"] == "viewer"


def test_a_local_user_is_never_taken_over_by_a_provider_account(served: Any, idp: Idp,
                                                                browser: Any) -> None:  # noqa: F811  # fmt: skip
    idp.user("u-9", preferred_username="dana", groups=["platform"])  # dana is a local viewer of the portal
    page, _ = watched_page(browser)
    _sign_in_at_the_provider(page, served.url, idp, "u-9")
    page.wait_for_url(on_the_login_page)
    assert "local user named 'dana'" in page.inner_text("[data-testid=login-error]")
    assert page.evaluate("fetch('/api/me').then(r => r.status)") == 401  # no session
    assert served.portal.users.get_user("dana").role.value == "viewer"
    records = [r for r in read_audit(served.portal.platform.log) if r.action == "sign-on"]
    assert [(r.user, r.result) for r in records] == [("anonymous", "denied")]


def test_a_callback_without_its_sign_in_or_with_another_state_is_refused(served: Any, idp: Idp,
                                                                         browser: Any) -> None:  # noqa: F811  # fmt: skip
    page, _ = watched_page(browser)
    page.goto(f"{served.url}/login/callback?code=forged&state=x")  # no sign-in was started in this browser
    page.wait_for_url(on_the_login_page)
    assert "sign in again" in page.inner_text("[data-testid=login-error]")
    page.goto(f"{served.url}/login")
    page.click("[data-testid=sso-login]")
    page.wait_for_url(f"{idp.url}/oauth2/authorize*")
    page.goto(f"{served.url}/login/callback?code=forged&state=not-the-one")  # an answer to another sign-in
    page.wait_for_url(on_the_login_page)
    assert "does not belong to this browser" in page.inner_text("[data-testid=login-error]")
    assert page.evaluate("fetch('/api/me').then(r => r.status)") == 401


def test_a_users_db_from_before_single_sign_on_keeps_its_sessions(tmp_path: Path) -> None:
    import sqlite3

    from kawa.portal.users import UserStore

    path = tmp_path / "users.db"
    store = UserStore(path)
    user, _ = store.add_user("old", "viewer", "an old password")
    secret, _session = store.create_session(user, 3600)
    with sqlite3.connect(path) as db:  # the sessions table as it was before the grants column
        db.executescript("CREATE TABLE s2 AS SELECT digest, user, csrf, created_at, expires_at FROM sessions;"
                         "DROP TABLE sessions; ALTER TABLE s2 RENAME TO sessions;")  # fmt: skip
    reopened = UserStore(path)
    assert reopened.session(secret).user.name == "old"  # migrated in place: the column added, the session kept
    assert reopened.session(reopened.create_session(user, 60)[0]).user.project_roles == ()
