"""Running one handler on one event: attempts, retries with backoff, replies and dead letters.

Shared by every shape: the embedded host and ``kawa worker`` call :func:`invoke_with_retries`; the HTTP
adapter calls :func:`invoke` once per request (Knative's delivery retries instead).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from kawa.errors import EventError, FunctionError
from kawa.events import CloudEvent, to_kafka
from kawa.functions.context import Context, Runtime, derived_id

# Header names on dead-letter records (plain headers, plus ce_ extensions so the record still reads as a
# CloudEvent whose extensions say what went wrong).
DLQ_HEADERS = {
    "error_type": ("kawa-error-type", "ce_kawaerrortype"),
    "error_message": ("kawa-error-message", "ce_kawaerrormessage"),
    "attempts": ("kawa-attempts", "ce_kawaattempts"),
    "function": ("kawa-function", "ce_kawafunction"),
    "source_topic": ("kawa-source-topic", "ce_kawasourcetopic"),
}
_MAX_MESSAGE = 2000


class PermanentError(FunctionError):
    """Raise from a handler when the event can never succeed: no retries, dead-lettered at once (HTTP 400)."""


@dataclass(slots=True)
class Outcome:
    """How an event ended: ``ok`` (replies to send), ``dead`` (dead-letter it) or ``abandoned`` (the host
    stopped during a retry wait: neither done nor dead, so it is not committed and will be redelivered)."""

    status: str
    replies: list[CloudEvent] = field(default_factory=list)
    error: BaseException | None = None
    attempts: int = 0
    handler_s: float = 0.0
    emitted: int = 0


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an async handler's coroutine from a worker thread (each thread keeps its own event loop)."""
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


_loops = threading.local()


def normalize_replies(runtime: Runtime, event: CloudEvent, result: Any) -> list[CloudEvent]:
    """The handler's return value as reply events with deterministic ids (see :func:`derived_id`)."""
    if result is None:
        return []
    items: Sequence[Any] = result if isinstance(result, list | tuple) else [result]
    replies = []
    for index, item in enumerate(items):
        if not isinstance(item, CloudEvent):
            raise FunctionError(
                f"function {runtime.spec.qualified_name} returned {type(item).__name__}; return a CloudEvent, "
                "a list of them or None (build one with ctx.new_event(type, data))"
            )
        attributes = dict(item.get_attributes())
        attributes["id"] = derived_id(runtime.spec, event, f"reply:{index}")
        replies.append(CloudEvent(attributes, item.get_data()))
    return replies


def invoke(runtime: Runtime, event: CloudEvent, attempt: int = 1) -> Outcome:
    """One attempt. Exceptions are caught into ``Outcome(status="failed"|"permanent")``."""
    ctx = Context(runtime, event, attempt)
    start = time.perf_counter()
    try:
        result = runtime.spec.handler(event, ctx)
        if runtime.spec.is_async or asyncio.iscoroutine(result):
            result = run_coroutine(result)
        replies = normalize_replies(runtime, event, result)
    except PermanentError as exc:
        return Outcome("permanent", error=exc, attempts=attempt, handler_s=time.perf_counter() - start)
    except Exception as exc:
        return Outcome("failed", error=exc, attempts=attempt, handler_s=time.perf_counter() - start)
    return Outcome("ok", replies, attempts=attempt, handler_s=time.perf_counter() - start, emitted=ctx._emitted)


def invoke_with_retries(runtime: Runtime, event: CloudEvent, stop: threading.Event) -> Outcome:
    """Attempts until success, a permanent error, or ``1 + retries`` failures (→ ``dead``). Waits between
    attempts with exponential backoff and jitter; a set ``stop`` ends the wait (→ ``abandoned``)."""
    spec = runtime.spec
    attempt = 1
    total = 0.0
    while True:
        outcome = invoke(runtime, event, attempt)
        total += outcome.handler_s
        if outcome.status == "ok":
            outcome.handler_s = total
            return outcome
        runtime.metrics.add("failed_attempts")
        runtime.logger.warning(
            "%s attempt %d/%d failed on event %s: %s: %s", spec.qualified_name, attempt, spec.retries + 1,
            event.get_id(), type(outcome.error).__name__, outcome.error,
        )
        if outcome.status == "permanent" or attempt > spec.retries:
            outcome.status, outcome.handler_s = "dead", total
            return outcome
        if stop.wait(spec.backoff(attempt, random.random())):
            outcome.status = "abandoned"
            return outcome
        runtime.metrics.add("retries")
        attempt += 1


async def ainvoke(runtime: Runtime, event: CloudEvent, attempt: int = 1) -> Outcome:
    """One attempt of an ``async`` handler, on the caller's event loop."""
    ctx = Context(runtime, event, attempt)
    start = time.perf_counter()
    try:
        result = runtime.spec.handler(event, ctx)
        if asyncio.iscoroutine(result):
            result = await result
        replies = normalize_replies(runtime, event, result)
    except PermanentError as exc:
        return Outcome("permanent", error=exc, attempts=attempt, handler_s=time.perf_counter() - start)
    except Exception as exc:
        return Outcome("failed", error=exc, attempts=attempt, handler_s=time.perf_counter() - start)
    return Outcome("ok", replies, attempts=attempt, handler_s=time.perf_counter() - start, emitted=ctx._emitted)


async def ainvoke_with_retries(runtime: Runtime, event: CloudEvent, stop: threading.Event) -> Outcome:
    """:func:`invoke_with_retries` for ``async`` handlers."""
    spec = runtime.spec
    attempt = 1
    total = 0.0
    while True:
        outcome = await ainvoke(runtime, event, attempt)
        total += outcome.handler_s
        if outcome.status == "ok":
            outcome.handler_s = total
            return outcome
        runtime.metrics.add("failed_attempts")
        runtime.logger.warning(
            "%s attempt %d/%d failed on event %s: %s: %s", spec.qualified_name, attempt, spec.retries + 1,
            event.get_id(), type(outcome.error).__name__, outcome.error,
        )
        if outcome.status == "permanent" or attempt > spec.retries:
            outcome.status, outcome.handler_s = "dead", total
            return outcome
        deadline = time.monotonic() + spec.backoff(attempt, random.random())
        while (left := deadline - time.monotonic()) > 0:
            if stop.is_set():
                outcome.status = "abandoned"
                return outcome
            await asyncio.sleep(min(left, 0.05))
        runtime.metrics.add("retries")
        attempt += 1


def send_replies(runtime: Runtime, replies: Sequence[CloudEvent], key: bytes | None) -> None:
    """Produce replies to the function's reply topic, keyed like the input so per-key order carries on."""
    topic = runtime.spec.reply_topic
    if not replies:
        return
    if topic is None:
        runtime.logger.debug("%s returned %d event(s) without a reply_topic", runtime.spec.qualified_name, len(replies))
        return
    for reply in replies:
        reply_key, value, headers = to_kafka(reply)
        runtime.producer.produce(topic, value, key=reply_key if reply_key is not None else key, headers=headers)


def dead_letter_headers(
    headers: Sequence[tuple[str, bytes]],
    error: BaseException | None,
    attempts: int,
    function: str,
    source_topic: str = "",
) -> list[tuple[str, bytes]]:
    """The original headers plus the reason (error type, message, attempts, function) and the topic the
    event came from, so a re-drive knows where to send it."""
    reason = {
        "error_type": type(error).__name__ if error is not None else "Unknown",
        "error_message": (str(error) if error is not None else "")[:_MAX_MESSAGE],
        "attempts": str(attempts),
        "function": function,
        "source_topic": source_topic,
    }
    ours = {name.lower() for pair in DLQ_HEADERS.values() for name in pair}
    out = [(k, v) for k, v in headers if k.lower() not in ours]
    for field_name, (plain, extension) in DLQ_HEADERS.items():
        value = reason[field_name].encode("utf-8", "replace")
        out.append((plain, value))
        out.append((extension, value))
    return out


def undecodable(error: EventError) -> Outcome:
    """The outcome for a record that is not a CloudEvent: dead-lettered without an attempt."""
    return Outcome("dead", error=error, attempts=0)
