"""Checking a password, throttled: the one way the login form and ``POST /api/login`` log people in.

Each failure counts against the account and against the client's address (:mod:`kawa.portal.throttle`);
while either must wait or is locked out, the attempt is refused with :class:`LoginThrottled` (HTTP 429
with ``Retry-After``) before the password is looked at, so the right password is refused too. The server
thread never sleeps for it. The start of a lockout is logged with the account and address (never the
password).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kawa.errors import InvalidCredentials, PortalError
from kawa.portal.throttle import retry_after_header

if TYPE_CHECKING:
    from kawa.portal.runtime import Portal
    from kawa.portal.users import User

log = logging.getLogger("kawa.portal.login")


class LoginThrottled(PortalError):
    """Too many failed logins for this account or from this address: wait ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        return retry_after_header(self.retry_after_s)


def throttled_login(portal: Portal, name: str, password: str, address: str) -> User:
    """The user when ``password`` is theirs; :class:`LoginThrottled` while refused, else
    :class:`~kawa.errors.InvalidCredentials` (counted as a failure)."""
    throttle = portal.logins
    refusal = throttle.refusal(name, address)
    if refusal is not None:
        wait = retry_after_header(refusal.retry_after_s)
        if refusal.locked:
            raise LoginThrottled(
                f"too many failed logins: logins for this account or from this address are locked for {wait} s; "
                "try again after that",
                refusal.retry_after_s,
            )
        raise LoginThrottled(f"too many failed logins: wait {wait} s before trying again", refusal.retry_after_s)
    try:
        user = portal.users.authenticate(name, password)
    except InvalidCredentials:
        for kind in throttle.failed(name, address):
            log.warning(
                "portal login lockout (%s) for %d s after repeated failed logins: account %r, address %s",
                kind,
                int(throttle.policies[kind].lockout_s),
                name,
                address,
            )
        raise
    throttle.succeeded(name, address)
    return user
