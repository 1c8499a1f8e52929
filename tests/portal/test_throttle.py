"""Login throttling: the pure policy by property (injected time), the store, and both ways to log in (the
JSON API and the HTML form) answering 429 with Retry-After, a logged lockout, the right password refused
while locked."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kawa.portal.permissions import Role
from kawa.portal.throttle import (
    FRESH,
    Attempts,
    LoginThrottle,
    ThrottlePolicy,
    check,
    delay_s,
    on_failure,
    on_success,
)
from tests.portal.conftest import PASSWORD

POLICY = ThrottlePolicy(free_failures=3, base_delay_s=1.0, factor=2.0, max_delay_s=60.0, lockout_failures=10,
                        lockout_s=900.0, forget_after_s=3600.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(policy: ThrottlePolicy, gaps: list[float]) -> tuple[Attempts, float, list[bool]]:
    """Failed logins, each ``gap`` seconds after the previous one; returns the state, the time, and which
    attempts were let through (a refused one is not checked, so it does not count)."""
    state, now, allowed = FRESH, 0.0, []
    for gap in gaps:
        now += gap
        verdict = check(policy, state, now)
        allowed.append(verdict.allowed)
        if verdict.allowed:
            state = on_failure(policy, state, now)
    return state, now, allowed


@given(st.lists(st.floats(min_value=0.0, max_value=200.0), max_size=40))
def test_the_free_failures_cost_nothing_and_every_later_attempt_waits(gaps: list[float]) -> None:
    state, _now, allowed = run(POLICY, gaps)
    assert all(allowed[: POLICY.free_failures])  # the first few mistakes are never refused
    if 0 < state.failures < POLICY.lockout_failures and state.failures >= POLICY.free_failures:
        verdict = check(POLICY, state, state.last_failure)  # right after a failure past the free ones
        assert not verdict.allowed and verdict.retry_after_s == pytest.approx(delay_s(POLICY, state.failures))


@given(st.integers(min_value=0, max_value=60))
def test_delays_grow_and_are_capped(failures: int) -> None:
    assert delay_s(POLICY, failures) <= delay_s(POLICY, failures + 1) <= POLICY.max_delay_s
    if failures >= POLICY.free_failures:
        assert delay_s(POLICY, failures) >= POLICY.base_delay_s


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=10, max_size=10),
       st.floats(min_value=0.0, max_value=899.0))
def test_a_lockout_refuses_everything_until_it_ends(gaps: list[float], later: float) -> None:
    state, now = FRESH, 0.0
    for gap in gaps:  # ten failures, each after waiting out the delay (and then some)
        now += check(POLICY, state, now).retry_after_s + gap
        assert check(POLICY, state, now).allowed
        state = on_failure(POLICY, state, now)
    assert state.failures == POLICY.lockout_failures
    locked_at = state.last_failure
    assert state.locked_until == pytest.approx(locked_at + POLICY.lockout_s)
    verdict = check(POLICY, state, locked_at + later)
    assert not verdict.allowed and verdict.locked
    assert verdict.retry_after_s == pytest.approx(POLICY.lockout_s - later)
    assert check(POLICY, state, locked_at + POLICY.lockout_s).allowed  # and it does end


@given(st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=60))
def test_no_more_than_the_lockout_count_of_guesses_per_lockout(gaps: list[float]) -> None:
    _state, _now, allowed = run(POLICY, gaps)
    # Within 60 x 10 s (less than the delays before a lockout and the lockout), at most lockout_failures
    # guesses get through.
    assert sum(allowed) <= POLICY.lockout_failures


def test_twenty_quick_wrong_passwords_get_ten_guesses_then_a_lockout() -> None:
    state, now, allowed = run(POLICY, [1.0] * 20)
    assert allowed[:4] == [True] * 4 and False in allowed and state.failures <= POLICY.lockout_failures
    # Waiting out each delay still reaches the lockout after lockout_failures failures.
    state = FRESH
    now = 0.0
    for _ in range(POLICY.lockout_failures):
        verdict = check(POLICY, state, now)
        now += verdict.retry_after_s
        state = on_failure(POLICY, state, now)
    assert not check(POLICY, state, now + 1).allowed and check(POLICY, state, now + 1).locked


def test_success_and_quiet_time_forget_failures() -> None:
    state, now, _ = run(POLICY, [0.5] * 3)
    assert on_success(POLICY, state, now) == FRESH
    assert check(POLICY, state, now + POLICY.forget_after_s).allowed
    assert on_failure(POLICY, state, now + POLICY.forget_after_s).failures == 1


def test_store_keeps_accounts_and_addresses_apart() -> None:
    clock = Clock()
    throttle = LoginThrottle(POLICY, ThrottlePolicy(free_failures=5, lockout_failures=8), clock=clock)
    for _ in range(3):
        assert throttle.refusal("ann", "10.0.0.1") is None
        throttle.failed("ann", "10.0.0.1")
    refused = throttle.refusal("ANN", "10.0.0.2")  # the account is throttled from any address, in any case
    assert refused is not None and refused.retry_after_s == pytest.approx(1.0) and not refused.locked
    assert throttle.refusal("bob", "10.0.0.1") is None  # the address has 5 free failures
    clock.now += 1.0
    assert throttle.refusal("ann", "10.0.0.1") is None
    # One address guessing at many accounts is throttled by address.
    for i in range(5):
        throttle.failed(f"user{i}", "10.0.0.9")
    assert throttle.refusal("someone-else", "10.0.0.9") is not None
    throttle.succeeded("ann", "10.0.0.9")  # a login to one's own account does not reset the address
    assert throttle.refusal("ann", "10.0.0.9") is not None


# --- through HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def clock(portal: Any) -> Clock:
    clock = Clock()
    portal.logins.clock = clock
    return clock


def api_login(client: Any, name: str, password: str) -> Any:
    return client.post("/api/login", json={"name": name, "password": password})


def form_login(client: Any, name: str, password: str) -> Any:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"},
                       follow_redirects=False)


def test_api_login_sets_a_session(client: Any, tokens: dict[Role, str], clock: Clock) -> None:
    response = api_login(client, "viewer-user", PASSWORD)
    assert response.status_code == 200 and response.json()["name"] == "viewer-user"
    assert client.get("/api/me").json()["csrf_token"] == response.json()["csrf_token"]
    wrong = api_login(client, "viewer-user", "not-the-password")
    assert wrong.status_code == 401 and wrong.json()["error"] == "InvalidCredentials"


def test_api_login_is_throttled_then_locked_and_the_lockout_is_logged(
    client: Any, tokens: dict[Role, str], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kawa.portal.login")
    statuses = []
    for _ in range(20):  # 20 wrong passwords in a row, as fast as the client can send them
        response = api_login(client, "admin-user", "wrong-guess-123")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert "too many failed logins" in response.json()["detail"]
    assert statuses[:3] == [401, 401, 401] and set(statuses[3:]) == {429}
    refused = api_login(client, "admin-user", PASSWORD)
    assert refused.status_code == 429  # the right one too, while refused

    # Waiting out each delay (the injected clock) lets guesses through until the lockout starts.
    guesses = 3
    while True:
        refused = api_login(client, "admin-user", "wrong-guess-123")
        if refused.status_code == 429 and "locked" in refused.json()["detail"]:
            break
        if refused.status_code == 429:
            clock.now += int(refused.headers["retry-after"])
            continue
        assert refused.status_code == 401
        guesses += 1
    assert guesses == 10
    locked = api_login(client, "admin-user", PASSWORD)
    assert locked.status_code == 429 and "locked" in locked.json()["detail"]
    assert 890 <= int(locked.headers["retry-after"]) <= 900
    lines = [r.getMessage() for r in caplog.records if "lockout" in r.getMessage()]
    assert lines and "admin-user" in lines[0] and "wrong-guess-123" not in caplog.text and PASSWORD not in caplog.text
    assert client.get("/api/me").status_code == 401

    clock.now += 901  # the lockout ends: the right password logs in, and the count starts afresh
    assert api_login(client, "admin-user", PASSWORD).status_code == 200


def test_html_login_form_is_throttled(client: Any, tokens: dict[Role, str], clock: Clock) -> None:
    from kawa.portal.security import SESSION_COOKIE

    for _ in range(3):
        response = form_login(client, "viewer-user", "wrong-guess-123")
        assert response.status_code == 303 and "error=" in response.headers["location"]
    throttled = form_login(client, "viewer-user", PASSWORD)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert "too many failed logins" in throttled.text and 'name="csrf_token"' in throttled.text
    assert SESSION_COOKIE not in client.cookies
    clock.now += int(throttled.headers["retry-after"])
    ok = form_login(client, "viewer-user", PASSWORD)
    assert ok.status_code == 303 and ok.headers["location"] == "/" and SESSION_COOKIE in client.cookies


def test_unknown_accounts_are_throttled_like_known_ones(client: Any, clock: Clock) -> None:
    statuses = [api_login(client, "nobody", "wrong-guess-123").status_code for _ in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
