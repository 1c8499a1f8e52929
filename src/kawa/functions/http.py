"""A function as a CloudEvents HTTP endpoint: ``kawa serve-function`` and the Knative shape.

``POST /`` takes one event in binary mode (``ce-*`` headers, data in the body) or structured mode
(``application/cloudevents+json``) and answers as Knative's delivery expects:

- ``200`` + the reply event (in the request's mode) when the handler returned one; ``202`` otherwise;
- ``400`` malformed (not a CloudEvent, bad attributes, batch mode) or a :class:`PermanentError`;
- ``422`` filtered out (the body says which attribute failed) — or ``202`` with ``--accept-filtered``;
- ``500`` the handler failed (Knative retries with backoff, then dead-letters); ``503`` while draining.

A KafkaSource wraps non-CloudEvent records (raw S3 notifications from Ceph) as ``dev.knative.kafka.event``;
those are unwrapped first (:mod:`kawa.events.s3`). Deliveries are deduplicated by ``source`` +
``id``: a duplicate of a finished event answers ``202`` with ``kawa-duplicate: true``. Replies also go to
the function's ``reply_topic`` when a log is configured (a KafkaSource drops sink replies).

``GET /health/liveness`` and ``GET /health/readiness`` serve the Knative probes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kawa.errors import EventError
from kawa.events import CloudEvent, EventRef
from kawa.events.s3 import unwrap
from kawa.functions.context import Runtime
from kawa.functions.dedupe import DEAD_LETTERED, DONE, REPLIED
from kawa.functions.invoke import Outcome, ainvoke, invoke, send_replies

log = logging.getLogger("kawa.functions.http")
_FORMAT = JSONFormat()
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def parse_request(headers: dict[str, str], body: bytes) -> tuple[CloudEvent, bool]:
    """The event of an HTTP request and whether it came in structured mode; :class:`EventError` if none."""
    content_type = headers.get("content-type", "")
    if content_type.startswith(BATCH):
        raise EventError("batch mode (application/cloudevents-batch+json) is not supported; send one event per request")
    binary = any(name.startswith("ce-") for name in headers)
    if not binary and not content_type.startswith(STRUCTURED):
        raise EventError(
            "not a CloudEvent: no ce-* headers (binary mode) and the content type is not "
            f"{STRUCTURED} (structured mode)"
        )
    if binary:
        missing = [a for a in ("specversion", "id", "source", "type") if f"ce-{a}" not in headers]
        if missing:
            names = ", ".join(f"ce-{m}" for m in missing)
            raise EventError(f"binary-mode CloudEvent lacks required header(s): {names}")
    message = ce_http.HTTPMessage(headers=headers, body=body)
    try:
        event = ce_http.from_binary(message, _FORMAT) if binary else ce_http.from_structured(message, _FORMAT)
    except (BaseCloudEventException, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise EventError(f"invalid CloudEvent: {exc}") from exc
    if not isinstance(event, CloudEvent):
        raise EventError(f"unsupported specversion {event.get_specversion()!r}; Kawa reads CloudEvents 1.0")
    return event, not binary


def encode(event: CloudEvent, structured: bool) -> tuple[dict[str, str], bytes]:
    message = ce_http.to_structured(event, _FORMAT) if structured else ce_http.to_binary(event, _FORMAT)
    return dict(message.headers), message.body


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)


class FunctionEndpoint:
    """The request handling, apart from the server (so tests and other servers can mount it)."""

    def __init__(self, runtime: Runtime, *, accept_filtered: bool = False) -> None:
        self.runtime = runtime
        self.spec = runtime.spec
        self.accept_filtered = accept_filtered
        self.ready = False
        self._limit: asyncio.Semaphore | None = None  # made on the server's loop

    async def receive(self, request: Request) -> Response:
        if not self.ready:
            return _error(503, "not-ready", "the function is starting or draining; retry")
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            incoming, structured = parse_request(headers, body)
            events = unwrap(incoming)
        except EventError as exc:
            return _error(400, "malformed", str(exc))
        first_reply: CloudEvent | None = None
        duplicates = 0
        for event in events:
            foreign = self.spec.scope.foreign(event)
            if foreign is not None:  # a bucket the trigger does not name: never handled
                self.runtime.metrics.add("skipped_foreign")
                self.spec.scope.note(log, self.spec.qualified_name, event)
                if self.spec.scope.dead_letters:
                    return _error(400, "foreign-bucket", f"{self.spec.qualified_name} does not act on it: {foreign}")
                continue
            reason = self.spec.filter.explain(event)
            if reason is not None:
                if self.accept_filtered:
                    return Response(status_code=202, headers={"kawa-filtered": reason[:200]})
                return _error(422, "filtered", f"{self.spec.qualified_name} does not take this event: {reason}",
                              filter=self.spec.filter.spec)
            status = self.runtime.dedupe.status(self.runtime.scope, EventRef.of(event).key())
            if status in (DONE, DEAD_LETTERED):
                duplicates += 1
                continue
            outcome = await self._invoke(event)
            if outcome.status == "permanent":
                return _error(400, "permanent", f"{type(outcome.error).__name__}: {outcome.error}")
            if outcome.status != "ok":
                return _error(500, "failed", f"{type(outcome.error).__name__}: {outcome.error}",
                              retryable=True)
            try:
                await run_in_threadpool(self._finish, event, outcome)
            except Exception as exc:
                log.exception("%s: cannot publish replies", self.spec.qualified_name)
                return _error(500, "failed", f"cannot publish replies: {exc}", retryable=True)
            if first_reply is None and outcome.replies:
                first_reply = outcome.replies[0]
        if first_reply is not None:
            reply_headers, reply_body = encode(first_reply, structured)
            return Response(reply_body, status_code=200, headers=reply_headers)
        extra = {"kawa-duplicate": "true"} if duplicates and duplicates == len(events) else {}
        return Response(status_code=202, headers=extra)

    async def _invoke(self, event: CloudEvent) -> Outcome:
        metrics = self.runtime.metrics
        metrics.add("received")
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.spec.concurrency)
        async with self._limit:  # at most `concurrency` invocations, as containerConcurrency promises
            if self.spec.is_async:
                outcome = await ainvoke(self.runtime, event)
            else:
                outcome = await run_in_threadpool(invoke, self.runtime, event)
        if outcome.status == "ok":
            metrics.add("succeeded")
            metrics.finished(outcome.handler_s, None)
        else:
            metrics.add("failed_attempts")
            log.warning("%s failed on event %s: %s: %s", self.spec.qualified_name, event.get_id(),
                        type(outcome.error).__name__, outcome.error)
            if self.runtime.has_producer():  # a failure record of an experiment arm goes out with the 500
                try:
                    await run_in_threadpool(self.runtime.producer.flush)
                except Exception as exc:
                    log.warning("%s: records of a failed event not flushed (%s)", self.spec.qualified_name,
                                type(exc).__name__)  # fmt: skip
        return outcome

    def _finish(self, event: CloudEvent, outcome: Outcome) -> None:
        """Publish replies to the reply topic (when there is a log) and remember the event as done."""
        runtime = self.runtime
        to_log = bool(outcome.replies) and runtime.spec.reply_topic is not None and runtime.log is not None
        if to_log:
            send_replies(runtime, outcome.replies, None)
        if runtime.has_producer():
            runtime.producer.flush()
        # A reply that went only into this HTTP response is lost if the response is: re-run on a retry.
        status = REPLIED if outcome.replies and not to_log else DONE
        runtime.dedupe.mark(runtime.scope, [(EventRef.of(event).key(), status)])

    async def liveness(self, request: Request) -> Response:
        return JSONResponse({"status": "alive", "function": self.spec.qualified_name})

    async def readiness(self, request: Request) -> Response:
        if not self.ready:
            return JSONResponse({"status": "not-ready"}, status_code=503)
        return JSONResponse({"status": "ready", "function": self.spec.qualified_name})

    async def stats(self, request: Request) -> Response:
        return Response(json.dumps(self.runtime.metrics.snapshot().to_dict()), media_type="application/json")


def create_app(runtime: Runtime, *, accept_filtered: bool = False) -> Starlette:
    """The ASGI application serving ``runtime``'s function."""
    endpoint = FunctionEndpoint(runtime, accept_filtered=accept_filtered)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        endpoint.ready = True
        log.info("serving %s", runtime.spec.qualified_name)
        try:
            yield
        finally:
            endpoint.ready = False
            await run_in_threadpool(runtime.close)

    app = Starlette(
        routes=[
            Route("/", endpoint.receive, methods=["POST"]),
            Route("/health/liveness", endpoint.liveness, methods=["GET"]),
            Route("/health/readiness", endpoint.readiness, methods=["GET"]),
            Route("/stats", endpoint.stats, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.endpoint = endpoint
    return app


def serve(
    runtime: Runtime,
    *,
    host: str = "0.0.0.0",
    port: int = 8080,
    accept_filtered: bool = False,
    drain_timeout_s: float = 30.0,
) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish first (up to ``drain_timeout_s``)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown; a drained stop should exit 0.
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    config = uvicorn.Config(
        create_app(runtime, accept_filtered=accept_filtered), host=host, port=port, log_level="info",
        access_log=False, lifespan="on", timeout_graceful_shutdown=max(1, int(drain_timeout_s)),
    )
    GracefulServer(config).run()


class BackgroundServer:
    """A uvicorn server on a thread (tests, benchmarks): ``with BackgroundServer(app) as server: server.url``."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, name="kawa-http", daemon=True)
        self.url = ""

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10.0)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
