"""Shared pieces of the JSON API: the section envelope, error mapping, and the principal/portal dependencies."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from kawa import errors as e
from kawa.evaluation.errors import InvalidExperimentSpec
from kawa.evaluation.experiments import ExperimentExists, ExperimentNotFound
from kawa.portal.apps import AppNotRunning
from kawa.portal.login import LoginThrottled
from kawa.portal.users import TokenNotFound

T = TypeVar("T")


class Section(BaseModel, Generic[T]):
    """A listing of one capability. ``configured: false`` (with ``reason``) when it is absent here."""

    configured: bool = True
    reason: str | None = None
    items: list[T] = []


class Problem(BaseModel):
    detail: str
    error: str


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def not_configured(reason: str | None) -> dict[str, Any]:
    return {"configured": False, "reason": reason, "items": []}


_STATUS: tuple[tuple[type[e.KawaError], int], ...] = (
    (LoginThrottled, 429),
    (e.InvalidCredentials, 401),
    (e.PermissionDenied, 403),
    (AppNotRunning, 404),
    (e.TopicNotFound, 404),
    (e.BucketNotFound, 404),
    (e.ObjectNotFound, 404),
    (e.ModelNotFound, 404),
    (e.ModelAliasNotFound, 404),
    (e.JobNotFound, 404),
    (e.ProjectNotFound, 404),
    (e.UserNotFound, 404),
    (TokenNotFound, 404),
    (e.FunctionNotFound, 404),
    (e.OffsetOutOfRange, 404),
    (e.RouteNotFound, 404),
    (ExperimentNotFound, 404),
    (ExperimentExists, 409),
    (e.NotConfigured, 409),
    (e.UserExists, 409),
    (e.TopicExists, 409),
    (e.BucketExists, 409),
    (e.BucketNotEmpty, 409),
    (e.ResourceUnavailable, 422),
    (e.QuotaExceeded, 422),
    (e.InvalidJobSpec, 422),
    (e.InvalidKey, 422),
    (e.InvalidBucketName, 422),
    (e.InvalidTopicSpec, 422),
    (e.InvalidPartition, 422),
    (e.ConfigError, 422),
    (e.InvalidRoute, 422),
    (InvalidExperimentSpec, 422),
    (e.BackendUnavailable, 503),
)


def status_for(exc: e.KawaError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def kawa_error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.KawaError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, LoginThrottled):
        headers = {"Retry-After": exc.retry_after}
    return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "not logged in / bad token"},
    403: {"model": Problem, "description": "the role may not take this action, or a bad CSRF token"},
}
LOGIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "wrong user name or password"},
    429: {"model": Problem, "description": "too many failed logins: wait the Retry-After seconds"},
}
