"""The core integration patterns: map, filter, choice (content-based router), split, aggregate, to (wire tap),
log and set-headers."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.expr import Expression, compile_callable, looks_like_callable
from kawa.routes.message import Message, Token, decode_json_body

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext, Sink
    from kawa.routes.processors import Pipeline

log = logging.getLogger("kawa.routes")


def _options(options: Any, name: str, shorthand: str) -> dict[str, Any]:
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    if isinstance(options, str | int | float | list):
        return {shorthand: options}
    raise InvalidRoute(f"{name}: options must be a mapping or a {shorthand}, got {options!r}")


def _as_messages(result: Any, message: Message) -> list[Message]:
    if isinstance(result, Message):
        return [result]
    if isinstance(result, list) and result and all(isinstance(r, Message) for r in result):
        return result
    return [message.derive(result if result is not None else b"")] if result is not None else []


class Map:
    """Replace the body: ``map: "pkg.mod:func"`` (called with the body; may return a body, a Message, a list
    of Messages or None to drop), ``map: {expr: "amount * 2"}``, ``map: {set: {field: expr}}`` (copy a
    mapping body and set fields), ``map: {remove: [field, ...]}``; ``{function: ..., message: true}`` passes
    the whole message."""

    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        self.function: Callable[..., Any] | None = None
        self.expr: Expression | None = None
        self.set: dict[str, Expression] = {}
        self.remove: list[str] = []
        self.whole = False
        if callable(options):
            self.function = options
            return
        opts = _options(options, "map", "function")
        ref = opts.pop("function", None)
        if isinstance(ref, str) and not looks_like_callable(ref):
            opts["expr"], ref = ref, None
        if ref is not None:
            self.function = compile_callable(ref)
        if "expr" in opts:
            self.expr = Expression(str(opts.pop("expr")))
        self.set = {k: Expression(str(v)) for k, v in (opts.pop("set", None) or {}).items()}
        self.remove = list(opts.pop("remove", None) or [])
        self.whole = bool(opts.pop("message", False))
        if opts:
            raise InvalidRoute(f"map: unknown options {sorted(opts)}; use function, expr, set, remove, message")
        if not (self.function or self.expr or self.set or self.remove):
            raise InvalidRoute("map needs a function ('module:func'), an expr, set or remove")

    def process(self, message: Message) -> list[Message]:
        if self.function is not None:
            return _as_messages(self.function(message if self.whole else message.body), message)
        if self.expr is not None:
            return [message.derive(self.expr.evaluate(message))]
        body = decode_json_body(message)
        if not isinstance(body, Mapping):
            raise MessageRejected(f"map set/remove needs a mapping body, got {type(body).__name__}")
        current = message.derive(dict(body))
        new = dict(body)
        for name, expression in self.set.items():
            new[name] = expression.evaluate(current)
        for name in self.remove:
            new.pop(name, None)
        return [message.derive(new)]


class Filter:
    """Keep messages for which the expression (or ``function``) is true: ``filter: "amount > 100"``."""

    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        opts = _options(options, "filter", "expr")
        ref = opts.get("function")
        self.function = compile_callable(ref) if ref else None
        self.expr = Expression(str(opts["expr"])) if "expr" in opts else None
        if self.function is None and self.expr is None:
            raise InvalidRoute('filter needs an expression: filter: "amount > 100"')

    def process(self, message: Message) -> list[Message]:
        keep = self.function(message.body) if self.function else self.expr.evaluate(message)  # type: ignore[union-attr]
        return [message] if keep else []


class _Branch:
    def __init__(self, spec: Any, ctx: RouteContext, label: str) -> None:
        from kawa.routes.components.base import build_sink
        from kawa.routes.processors import build_pipeline
        from kawa.routes.spec import EndpointSpec

        if isinstance(spec, list):
            spec = {"steps": spec}
        if not isinstance(spec, Mapping):
            raise InvalidRoute(f"choice {label}: expected a mapping with steps/to, got {spec!r}")
        condition = spec.get("if", spec.get("expr"))
        self.condition = Expression(str(condition)) if condition is not None else None
        self.pipeline: Pipeline = build_pipeline(spec.get("steps") or [], ctx)
        self.sink: Sink | None = build_sink(EndpointSpec.parse(spec["to"]), ctx) if spec.get("to") else None
        if self.sink is not None:
            self.sink.open()


class Choice:
    """Content-based router: the first ``when`` branch whose ``if`` holds runs its ``steps``; else
    ``otherwise``. A branch with ``to`` writes there and ends; one without continues the route."""

    def __init__(self, options: Any, ctx: RouteContext) -> None:
        opts = _options(options, "choice", "when")
        whens = opts.get("when") or []
        if not isinstance(whens, list) or not whens:
            raise InvalidRoute("choice needs when: [{if: expression, steps: [...], to: uri}, ...]")
        self.branches = [_Branch(w, ctx, f"when #{i + 1}") for i, w in enumerate(whens)]
        for i, branch in enumerate(self.branches):
            if branch.condition is None:
                raise InvalidRoute(f"choice when #{i + 1} has no 'if' expression")
        self.otherwise = _Branch(opts["otherwise"], ctx, "otherwise") if opts.get("otherwise") is not None else None

    def _select(self, message: Message) -> _Branch | None:
        for branch in self.branches:
            if branch.condition is not None and branch.condition.evaluate(message):
                return branch
        return self.otherwise

    def process(self, message: Message) -> list[Message]:
        branch = self._select(message)
        if branch is None:
            return [message]
        return self._finish(branch, branch.pipeline.run(message))

    def _finish(self, branch: _Branch, out: list[Message]) -> list[Message]:
        if branch.sink is not None:
            if out:
                branch.sink.write(out)
            return []
        return out

    def tick(self, now: float) -> list[Message]:
        out: list[Message] = []
        for branch in [*self.branches, *([self.otherwise] if self.otherwise else [])]:
            out.extend(self._finish(branch, branch.pipeline.tick(now)))
        return out

    def held(self) -> set[Token]:
        tokens: set[Token] = set()
        for branch in [*self.branches, *([self.otherwise] if self.otherwise else [])]:
            tokens |= branch.pipeline.held()
        return tokens

    def close(self) -> None:
        for branch in [*self.branches, *([self.otherwise] if self.otherwise else [])]:
            branch.pipeline.close()
            if branch.sink is not None:
                branch.sink.close()


class Split:
    """One message per item: of a list body (default), of ``expr`` (``split: {expr: "body['items']"}``), of
    the text's ``lines``, or of the rows of a ``csv`` body. Parts get ids ``<id>#<n>``."""

    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        opts = _options(options, "split", "expr")
        self.expr = Expression(str(opts["expr"])) if "expr" in opts else None
        self.lines = bool(opts.get("lines"))
        self.csv = bool(opts.get("csv"))

    def _items(self, message: Message) -> list[Any]:
        if self.expr is not None:
            return list(self.expr.evaluate(message) or [])
        body = message.body
        if self.lines or self.csv:
            try:
                text = bytes(body).decode("utf-8") if not isinstance(body, str) else body
            except (UnicodeDecodeError, TypeError) as exc:
                raise MessageRejected(f"split: body is not UTF-8 text: {exc}") from exc
            if self.csv:
                return list(csv.DictReader(io.StringIO(text)))
            return [line for line in text.splitlines() if line.strip()]
        body = decode_json_body(message)
        if not isinstance(body, list):
            raise MessageRejected(f"split: body is a {type(body).__name__}, not a list; give split an expr")
        return body

    def process(self, message: Message) -> list[Message]:
        items = self._items(message)
        return [
            message.derive(item, suffix=str(i), headers={"split-index": i, "split-size": len(items)})
            for i, item in enumerate(items)
        ]


class Aggregate:
    """Collect bodies into lists: every ``count`` messages, or a ``window`` (``5s``) after a group's first
    message, whichever comes first; ``key`` (an expression) aggregates per key. The aggregate's id is a hash
    of its members' ids, so a redelivered group yields the same id."""

    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        from kawa.routes.components.base import parse_duration

        opts = _options(options, "aggregate", "count")
        self.count = int(opts["count"]) if opts.get("count") else None
        self.window = parse_duration(opts["window"]) if opts.get("window") else None
        if self.count is None and self.window is None:
            raise InvalidRoute("aggregate needs count: N and/or window: 5s")
        self.key = Expression(str(opts["key"])) if opts.get("key") else None
        self._groups: dict[Any, tuple[float, list[Message]]] = {}

    def process(self, message: Message) -> list[Message]:
        group_key = self.key.evaluate(message) if self.key else None
        started, members = self._groups.get(group_key, (time.monotonic(), []))
        members.append(message)
        self._groups[group_key] = (started, members)
        if self.count is not None and len(members) >= self.count:
            del self._groups[group_key]
            return [self._emit(group_key, members)]
        return []

    def tick(self, now: float) -> list[Message]:
        if self.window is None:
            return []
        due = [k for k, (started, _) in self._groups.items() if now - started >= self.window]
        return [self._emit(k, self._groups.pop(k)[1]) for k in due]

    def held(self) -> set[Token]:
        return {t for _, members in self._groups.values() for m in members for t in m.tokens}

    def _emit(self, group_key: Any, members: list[Message]) -> Message:
        digest = hashlib.sha256("\x1e".join(m.id for m in members).encode()).hexdigest()[:32]
        first = members[0]
        tokens = tuple(dict.fromkeys(t for m in members for t in m.tokens))
        headers = {**first.headers, "aggregate-size": len(members)}
        if group_key is not None:
            headers["aggregate-key"] = group_key
        return Message(
            body=[m.body for m in members], id=f"agg-{digest}", source=first.source, headers=headers,
            key=None if group_key is None else str(group_key), time=first.time, tokens=tokens,
        )  # fmt: skip


class To:
    """Wire tap: write the message to another endpoint and pass it on (``stop: true`` ends it there)."""

    def __init__(self, options: Any, ctx: RouteContext) -> None:
        from kawa.routes.components.base import build_sink
        from kawa.routes.spec import EndpointSpec

        opts = _options(options, "to", "uri")
        self.stop = bool(opts.pop("stop", False))
        self.sink = build_sink(EndpointSpec.parse(opts if "uri" in opts else opts.get("uri")), ctx)
        self.sink.open()

    def process(self, message: Message) -> list[Message]:
        self.sink.write([message])
        return [] if self.stop else [message]

    def close(self) -> None:
        self.sink.close()


class Log:
    """Log each message (``log: "saw {id}"`` formats id, key and headers)."""

    def __init__(self, options: Any, ctx: RouteContext) -> None:
        self.template = str(options) if options else "route {route}: message {id}"
        self.route = ctx.route_id

    def process(self, message: Message) -> list[Message]:
        try:
            text = self.template.format(route=self.route, id=message.id, key=message.key, **message.headers)
        except (KeyError, IndexError, ValueError):
            text = self.template
        log.info("%s", text)
        return [message]


class SetHeaders:
    """Set headers from expressions: ``set-headers: {priority: "'high' if amount > 100 else 'low'"}``."""

    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        if not isinstance(options, Mapping) or not options:
            raise InvalidRoute("set-headers needs a mapping of header name to expression")
        self.exprs = {str(k): Expression(str(v)) for k, v in options.items()}

    def process(self, message: Message) -> list[Message]:
        return [message.derive(None, headers={k: e.evaluate(message) for k, e in self.exprs.items()})]
