"""The notification ingress (``kawa ingress``): Ceph RGW's HTTP push endpoint, appending to the event log.

An RGW topic with ``push-endpoint=http://<ingress>/rgw/<topic>`` and ``persistent=true`` POSTs each S3
event as ``{"Records": [...]}`` JSON in Ceph's layout (``eventName`` without ``s3:``, ``size`` as a
string, ``eventId``, ``opaqueData``). ``POST /rgw/<topic>`` publishes every record in the body to
``<topic>`` as a CloudEvent (the same wrapping as every other S3 notification in Kawa, see
:mod:`kawa.events.s3`) and answers:

- ``200`` only after the log acknowledged every record of the request;
- ``503`` when the log did not acknowledge within ``publish_timeout_s`` (the RGW keeps the event in its
  persistent queue and sends it again: nothing is lost while the log or this ingress is down);
- ``400`` when the body holds no S3 event records (retrying would not help).

At-least-once: a retried delivery publishes the record again, with the same CloudEvent id (derived from the
record), so consumers deduplicate it on ``source`` + ``id``. ``GET /health`` answers ``200``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from kawa.errors import EventError, NotificationError
from kawa.events.s3 import raw_records
from kawa.store.records import Notifier
from kawa.store.rules import RuleRegistry

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from kawa.log.base import EventLog

log = logging.getLogger("kawa.store.ingress")
PATH_PREFIX = "/rgw/"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def push_endpoint(ingress_url: str, topic: str) -> str:
    """The RGW topic's ``push-endpoint`` that delivers into ``topic`` through the ingress at ``ingress_url``."""
    return f"{ingress_url.rstrip('/')}{PATH_PREFIX}{topic}"


class Ingress:
    """Publishes the S3 records of one HTTP request to a topic and returns once the log acknowledged them."""

    def __init__(self, event_log: EventLog, *, region: str = "", publish_timeout_s: float = 10.0) -> None:
        self.notifier = Notifier(RuleRegistry(None), lambda: event_log, region, publish_timeout_s=publish_timeout_s)
        self.received = 0
        self._lock = threading.Lock()

    def accept(self, topic: str, body: bytes) -> int:
        """Publish the records in ``body`` to ``topic``; :class:`EventError` if there are none,
        :class:`NotificationError` if the log did not take them."""
        if not _TOPIC.fullmatch(topic):
            raise EventError(f"{topic!r} is not a valid topic name (letters, digits, '.', '_', '-')")
        records = raw_records(body)
        if not records:
            raise EventError("the request holds no S3 event records")
        for record in records:
            self.notifier.publish(topic, record)
        with self._lock:
            self.received += len(records)
        return len(records)

    def close(self) -> None:
        self.notifier.close()


def create_app(ingress: Ingress) -> Starlette:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def push(request: Request) -> Response:
        topic = request.path_params["topic"]
        body = await request.body()
        try:
            count = await run_in_threadpool(ingress.accept, topic, body)
        except EventError as exc:
            log.warning("ingress: refused a delivery to %s: %s", topic, exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        except NotificationError as exc:
            log.warning("ingress: the log did not take a delivery to %s (the RGW retries): %s", topic, exc)
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"published": count})

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True, "received": ingress.received})

    return Starlette(routes=[
        Route(PATH_PREFIX + "{topic}", push, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


def serve(ingress: Ingress, *, host: str = "127.0.0.1", port: int = 8090, fd: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT (requests in flight finish first).

    ``fd``: serve on an inherited listening socket instead of binding ``host:port`` (systemd socket activation,
    or any supervisor that keeps the socket open while the ingress restarts). Ceph 16.2's RGW stops delivering
    a persistent topic's queue after a few *refused* connections until the RGW itself restarts; a socket that
    stays open keeps deliveries waiting in its backlog instead, so the ingress can restart without that.
    """
    import uvicorn

    config = uvicorn.Config(create_app(ingress), host=host, port=port, fd=fd, log_level="info", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


class BackgroundIngress:
    """The ingress on a thread (tests, benchmarks): ``with BackgroundIngress(log) as ingress: ingress.url``."""

    def __init__(self, event_log: EventLog, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        import uvicorn

        self.ingress = Ingress(event_log, **options)
        self._server = uvicorn.Server(uvicorn.Config(create_app(self.ingress), host=host, port=port,
                                                     log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="kawa-ingress", daemon=True)
        self.url = ""

    def start(self, timeout: float = 10.0) -> BackgroundIngress:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise NotificationError("the notification ingress did not start; is its port free?")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10.0)
        self.ingress.close()

    def __enter__(self) -> BackgroundIngress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
