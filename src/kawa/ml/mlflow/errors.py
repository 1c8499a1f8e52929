"""MLflow's exceptions → Kawa's, through one table (the only place that decides what an MLflow error means)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kawa.errors import KawaError, ModelError, ModelNotFound, TrackingUnavailable

_BY_CODE: dict[str, type[ModelError]] = {
    "RESOURCE_DOES_NOT_EXIST": ModelNotFound,
    "NOT_FOUND": ModelNotFound,
    "ENDPOINT_NOT_FOUND": TrackingUnavailable,
    "TEMPORARILY_UNAVAILABLE": TrackingUnavailable,
    "SERVICE_UNDER_MAINTENANCE": TrackingUnavailable,
    "REQUEST_LIMIT_EXCEEDED": TrackingUnavailable,
    "UNAUTHENTICATED": TrackingUnavailable,
    "PERMISSION_DENIED": TrackingUnavailable,
}
"""MLflow ``error_code`` → the Kawa error raised for it; any other code is a plain :class:`ModelError`."""

_HINT: dict[type[ModelError], str] = {
    TrackingUnavailable: "check ml.tracking_uri and that the MLflow server is up",
}


def error_class(code: str | None) -> type[ModelError]:
    """The Kawa error for an MLflow error code."""
    return _BY_CODE.get(code or "", ModelError)


def _connection_error(exc: BaseException) -> bool:
    """requests/urllib3 could not reach the server (MLflow wraps those after its retries)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError):
            return True
        module = type(seen).__module__
        if module.startswith(("requests", "urllib3")) and "Connection" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def mlflow_errors(what: str, *, not_found: str | None = None) -> Iterator[None]:
    """Translate MLflow errors raised in the block: ``what`` says what Kawa was doing; ``not_found``, when
    given, replaces the message of a not-found error (say what to do instead)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except KawaError:
        raise
    except MlflowException as exc:
        kind = error_class(exc.error_code)
        if kind is ModelError and _connection_error(exc):
            kind = TrackingUnavailable
        if kind is ModelNotFound and not_found is not None:
            raise ModelNotFound(not_found) from exc
        hint = _HINT.get(kind)
        raise kind(f"{what}: {exc.message}" + (f"; {hint}" if hint else "")) from exc
    except OSError as exc:
        if _connection_error(exc) or type(exc).__module__.startswith(("requests", "urllib3")):
            hint = _HINT[TrackingUnavailable]
            raise TrackingUnavailable(f"{what}: cannot reach the MLflow server ({exc}); {hint}") from exc
        raise
