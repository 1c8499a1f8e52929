"""Login throttling: growing delays after failed logins, then a temporary lockout.

The decisions are pure: a frozen :class:`Attempts` state per key (an account or a client address), the
:class:`ThrottlePolicy`, and functions of them and a time ``now``; no clock, no I/O. :class:`LoginThrottle`
is the small in-memory store the portal keeps them in (one process; a restart forgets them).

The policy's guarantees (``tests/portal/test_throttle.py`` checks them by property):

- the first ``free_failures`` failures cost nothing; after them each attempt waits ``base_delay_s`` doubled
  per further failure, at most ``max_delay_s``;
- ``lockout_failures`` failures in a row lock the key for ``lockout_s``: every attempt is refused, the right
  password too;
- a success forgets the key's failures; so does ``forget_after_s`` without a failure.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 3
    base_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    lockout_failures: int = 10
    lockout_s: float = 900.0
    forget_after_s: float = 3600.0


ACCOUNT_POLICY = ThrottlePolicy()
# One address may try several accounts (a shared office address, a typo in the user name), so it gets
# more free failures; it is still locked well before a password list gets anywhere.
ADDRESS_POLICY = ThrottlePolicy(free_failures=10, lockout_failures=30)


@dataclass(frozen=True)
class Attempts:
    """Failed logins of one key: how many in a row, the last one's time, and a lockout's end (0: none)."""

    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0  # > 0 when not allowed
    locked: bool = False  # refused because of a lockout, not a delay


FRESH = Attempts()


def current(policy: ThrottlePolicy, state: Attempts, now: float) -> Attempts:
    """``state`` as it stands at ``now``: forgotten after a quiet ``forget_after_s`` with no lockout on."""
    if state.locked_until > now:
        return state
    if state.failures and now - state.last_failure >= policy.forget_after_s:
        return FRESH
    if state.locked_until and state.locked_until <= now:
        return FRESH  # a lockout that ran out starts the count afresh
    return state


def delay_s(policy: ThrottlePolicy, failures: int) -> float:
    """The wait after ``failures`` failures in a row (0 within the free ones)."""
    extra = failures - policy.free_failures
    if extra < 0:
        return 0.0
    return min(policy.max_delay_s, policy.base_delay_s * policy.factor**extra)


def check(policy: ThrottlePolicy, state: Attempts, now: float) -> Verdict:
    """May a login be attempted at ``now``?"""
    state = current(policy, state, now)
    if state.locked_until > now:
        return Verdict(False, state.locked_until - now, locked=True)
    ready_at = state.last_failure + delay_s(policy, state.failures) if state.failures else now
    if ready_at > now:
        return Verdict(False, ready_at - now)
    return Verdict(True)


def on_failure(policy: ThrottlePolicy, state: Attempts, now: float) -> Attempts:
    """The state after a failed login at ``now`` (a lockout starts at ``lockout_failures``)."""
    state = current(policy, state, now)
    failures = state.failures + 1
    locked_until = now + policy.lockout_s if failures >= policy.lockout_failures else 0.0
    return replace(state, failures=failures, last_failure=now, locked_until=locked_until)


def on_success(_policy: ThrottlePolicy, _state: Attempts, _now: float) -> Attempts:
    return FRESH


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, never 0 (a client that retries at once is refused again)."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class Refusal:
    retry_after_s: float
    locked: bool


class LoginThrottle:
    """Per-account and per-address :class:`Attempts` in memory, under one lock; ``clock`` is injectable."""

    MAX_KEYS = 100_000  # beyond it the longest-quiet keys are dropped (a flood of addresses costs bounded memory)

    def __init__(
        self,
        account: ThrottlePolicy = ACCOUNT_POLICY,
        address: ThrottlePolicy = ADDRESS_POLICY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policies = {"account": account, "address": address}
        self.clock = clock
        self._state: dict[tuple[str, str], Attempts] = {}
        self._lock = threading.Lock()

    def _keys(self, account: str, address: str) -> list[tuple[str, str]]:
        return [("account", account.lower()), ("address", address)]

    def refusal(self, account: str, address: str) -> Refusal | None:
        """Why a login for ``account`` from ``address`` may not be tried now (None: it may)."""
        now = self.clock()
        worst: Refusal | None = None
        with self._lock:
            for key in self._keys(account, address):
                verdict = check(self.policies[key[0]], self._state.get(key, FRESH), now)
                if not verdict.allowed and (worst is None or verdict.retry_after_s > worst.retry_after_s):
                    worst = Refusal(verdict.retry_after_s, verdict.locked)
        return worst

    def failed(self, account: str, address: str) -> list[str]:
        """Record a failure; returns the kinds (``account``, ``address``) whose lockout starts with it."""
        now = self.clock()
        started = []
        with self._lock:
            for key in self._keys(account, address):
                policy = self.policies[key[0]]
                before = current(policy, self._state.get(key, FRESH), now)
                after = on_failure(policy, before, now)
                self._state[key] = after
                if after.locked_until and not before.locked_until:
                    started.append(key[0])
            self._trim()
        return started

    def succeeded(self, account: str, address: str) -> None:
        """Forget the account's failures. The address keeps its own: interleaving logins to an account one
        owns must not reset the count of guesses at other accounts."""
        with self._lock:
            self._state.pop(("account", account.lower()), None)

    def _trim(self) -> None:
        if len(self._state) <= self.MAX_KEYS:
            return
        oldest = sorted(self._state, key=lambda k: self._state[k].last_failure)
        for key in oldest[: len(self._state) - self.MAX_KEYS]:
            del self._state[key]
