"""``http:`` — webhooks in (source) and HTTP POST out (sink).

Source ``http:/hooks/orders`` (options ``host``, default ``127.0.0.1``; ``port``, default ``8788``;
``timeout``, default ``30s``): a small HTTP server for routes (one per host:port in the process, shared by
every route) accepts ``POST /hooks/orders``. It answers only once the message reached the route's sinks or
its dead letter — ``202 Accepted`` — so the sender knows it is stored; ``503`` when the route did not finish
in time and ``429`` when the route is backed up (both mean: send again). CloudEvents in binary mode
(``ce-id``, ``ce-source`` … headers) or structured mode keep their identity, so a re-sent event is the same
message; other requests use the ``Idempotency-Key`` header, else a hash of the body. JSON bodies are parsed.
The portal (``kawa up``'s port 8787) does not serve webhooks yet: routes listen on their own port.

Sink ``http://host:port/path`` (options ``timeout``, default ``10s``; ``type``): POSTs each message as a
binary-mode CloudEvent. ``2xx`` = stored; ``400``-``499`` except ``404``/``408``/``409``/``429`` = rejected
(dead letter at once); anything else is retried with the route's backoff (Knative's rules).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from kawa.errors import MessageRejected, RouteError
from kawa.routes.components.base import RouteContext, option, parse_duration
from kawa.routes.components.topic import event_headers
from kawa.routes.message import Message, Token, to_bytes
from kawa.routes.spec import EndpointSpec

DEFAULT_PORT = 8788
_RETRIED = {404, 408, 409, 429}
# CloudEvents HTTP binding: percent-encode space, '"', '%' and anything not printable ASCII.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


class _Pending:
    __slots__ = ("done", "message")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.done = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, text: str) -> None:
        body = json.dumps({"status": text}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        source = self.server.paths.get(path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if source is None:
            self._reply(404, f"no route listens on {path}")
            return
        try:
            message = source.to_message(body, {k.lower(): v for k, v in self.headers.items()})
        except MessageRejected as exc:
            self._reply(400, str(exc))
            return
        pending = _Pending(message)
        try:
            source.inbox.put_nowait(pending)
        except queue.Full:
            self._reply(429, "route is backed up; retry later")
            return
        if pending.done.wait(source.timeout):
            self._reply(202, "accepted")
        else:
            self._reply(503, "not processed in time; retry (duplicates are deduplicated by id)")

    def do_GET(self) -> None:
        self._reply(200 if urlsplit(self.path).path in self.server.paths else 404, "ok")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    paths: dict[str, HttpSource]


class _Servers:
    """One HTTP server per (host, port) in this process, shared by the routes that listen there."""

    lock = threading.Lock()
    servers: ClassVar[dict[tuple[str, int], tuple[_Server, threading.Thread]]] = {}

    @classmethod
    def attach(cls, host: str, port: int, path: str, source: HttpSource) -> int:
        with cls.lock:
            entry = cls.servers.get((host, port))
            if entry is None:
                try:
                    server = _Server((host, port), _Handler)
                except OSError as exc:
                    raise RouteError(
                        f"cannot listen on {host}:{port} for webhooks: {exc}; pick another port with ?port="
                    ) from exc
                server.paths = {}
                thread = threading.Thread(target=server.serve_forever, name=f"routes-http-{port}", daemon=True)
                thread.start()
                entry = cls.servers[(host, port)] = (server, thread)
                if port == 0:
                    cls.servers[(host, server.server_address[1])] = entry
            server = entry[0]
            if path in server.paths and server.paths[path] is not source:
                raise RouteError(f"another route already listens on {path} at {host}:{port}")
            server.paths[path] = source
            return int(server.server_address[1])

    @classmethod
    def detach(cls, host: str, port: int, path: str) -> None:
        with cls.lock:
            entry = cls.servers.get((host, port))
            if entry is None:
                return
            server, thread = entry
            server.paths.pop(path, None)
            if not server.paths:
                for k in [k for k, v in cls.servers.items() if v is entry]:
                    del cls.servers[k]
                server.shutdown()
                server.server_close()
                thread.join(5)


class HttpSource:
    exclusive = False

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        parts = urlsplit(endpoint.uri)
        self.path = unquote(parts.path) or "/"
        self.host = str(option(endpoint, "host", parts.hostname or "127.0.0.1"))
        self.port = int(option(endpoint, "port", parts.port or DEFAULT_PORT, int))
        self.timeout = parse_duration(option(endpoint, "timeout", "30s"))
        self.inbox: queue.Queue[_Pending] = queue.Queue(maxsize=int(option(endpoint, "queue", 1000, int)))
        self._waiting: dict[int, _Pending] = {}
        self._next = 0
        self.bound_port: int | None = None

    def to_message(self, body: bytes, headers: dict[str, str]) -> Message:
        content_type = headers.get("content-type", "application/octet-stream")
        data: Any = body
        event_id, source, extra = headers.get("ce-id"), headers.get("ce-source"), {}
        if content_type.startswith("application/cloudevents+json"):
            try:
                event = json.loads(body)
            except ValueError as exc:
                raise MessageRejected(f"structured CloudEvent is not JSON: {exc}") from exc
            event_id, source = event.get("id"), event.get("source")
            content_type = event.get("datacontenttype", "application/json")
            data = event.get("data")
            extra = {f"ce-{k}": v for k, v in event.items() if k not in ("id", "source", "data", "data_base64")}
        elif "json" in content_type.split(";")[0]:
            try:
                data = json.loads(body) if body else None
            except ValueError as exc:
                raise MessageRejected(f"body is not JSON: {exc}") from exc
        extra.update(
            {k: unquote(v) for k, v in headers.items() if k.startswith("ce-") and k not in ("ce-id", "ce-source")}
        )
        message_id = event_id or headers.get("idempotency-key") or hashlib.sha256(body).hexdigest()[:32]
        return Message(
            body=data, id=str(message_id), source=str(source or f"kawa:http:{self.path}"),
            headers={"content-type": content_type, **extra}, time=datetime.now(UTC),
        )  # fmt: skip

    def open(self) -> None:
        self.bound_port = _Servers.attach(self.host, self.port, self.path, self)

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        try:
            first = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return out
        for pending in [first, *self._drain(max_messages - 1)]:
            self._next += 1
            self._waiting[self._next] = pending
            pending.message.tokens = (self._next,)
            out.append(pending.message)
        return out

    def _drain(self, limit: int) -> list[_Pending]:
        items: list[_Pending] = []
        while len(items) < limit:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def ack(self, tokens: Iterable[Token]) -> None:
        for token in tokens:
            pending = self._waiting.pop(token, None)  # type: ignore[call-overload]
            if pending is not None:
                pending.done.set()

    def commit(self) -> None:
        pass  # the reply to the sender is the commit

    def close(self) -> None:
        _Servers.detach(self.host, self.port, self.path)


class HttpSink:
    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.url = endpoint.uri
        self.timeout = parse_duration(option(endpoint, "timeout", "10s"))
        self.type = option(endpoint, "type")
        self._client: Any = None

    def open(self) -> None:
        import httpx

        self._client = httpx.Client(timeout=self.timeout)

    def write(self, messages: Sequence[Message]) -> None:
        import httpx

        for message in messages:
            data, content_type = to_bytes(message.body, message.headers.get("content-type"))
            event_type = str(self.type or message.headers.get("ce-type") or f"kawa.route.{self.ctx.route_id}")
            source = f"/kawa/routes/{self.ctx.route_id}"
            headers = {
                ("Content-Type" if name == "content-type" else name.replace("ce_", "ce-", 1)): (
                    value.decode() if name == "content-type" else quote(value.decode(), safe=_HEADER_SAFE)
                )
                for name, value in event_headers(message, event_type, source, content_type)
            }
            try:
                response = self._client.post(self.url, content=data, headers=headers)
            except httpx.HTTPError as exc:
                raise RouteError(f"POST {self.url} failed: {exc}") from exc
            if response.status_code < 300:
                continue
            text = f"POST {self.url} answered {response.status_code}: {response.text[:200]}"
            if 400 <= response.status_code < 500 and response.status_code not in _RETRIED:
                raise MessageRejected(text)
            raise RouteError(text)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
