"""Running one handler on one event: attempts, retries with backoff, replies and dead letters.

Shared by every shape: the embedded host and ``kawa worker`` call :func:`invoke_with_retries`; the HTTP
adapter calls :func:`invoke` once per request (Knative's delivery retries instead).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from kawa import deadletter
from kawa.errors import BackendUnavailable, EventError, FunctionError, ProducerError
from kawa.events import CloudEvent, to_kafka
from kawa.functions.context import Context, Runtime, derived_id
from kawa.functions.types import EventRef, handling, object_event

if TYPE_CHECKING:
    from kawa.functions.app import FunctionSpec

_log = logging.getLogger("kawa.functions.host")


class PermanentError(FunctionError):
    """Raise from a handler when the event can never succeed: no retries, dead-lettered at once (HTTP 400).

    Errors :func:`kawa.deadletter.is_permanent` recognizes (a decompression bomb, undecodable image, DICOM or
    JSON bytes, a schema validation failure) are treated the same without being wrapped."""


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
    first_failure: datetime | None = None
    last_failure: datetime | None = None
    reason: str | None = None  # a dead-letter reason code that overrides the one the error gives


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


def _failed(error: Exception, attempt: int, handler_s: float) -> Outcome:
    status = "permanent" if isinstance(error, PermanentError) or deadletter.is_permanent(error) else "failed"
    return Outcome(status, error=error, attempts=attempt, handler_s=handler_s, last_failure=deadletter.failure_time())


@dataclass(frozen=True, slots=True)
class Screened:
    """Why an event is not handed to the handler: a record of a bucket the trigger does not name
    (``foreign``; dead-lettered when ``dead_letter``), or an event the filter does not take."""

    verdict: Literal["foreign", "filtered"]
    reason: str
    dead_letter: bool = False


def screen(spec: FunctionSpec, event: CloudEvent) -> Screened | None:
    """None when ``event`` (one unwrapped event) goes to the handler; else why not. Checked in this order:
    the trigger's bucket scope, then the filter."""
    foreign = spec.scope.foreign(event)
    if foreign is not None:
        return Screened("foreign", foreign, spec.scope.dead_letters)
    reason = spec.filter.explain(event)
    if reason is not None:
        return Screened("filtered", reason)
    return None


def _argument(runtime: Runtime, event: CloudEvent) -> Any:
    """What the handler's first parameter receives: the event, or its :class:`~kawa.ObjectEvent`."""
    if runtime.spec.argument == "object":
        return object_event(event, lambda: runtime.store)
    return event


def invoke(runtime: Runtime, event: CloudEvent, attempt: int = 1) -> Outcome:
    """One attempt. Exceptions are caught into ``Outcome(status="failed"|"permanent")``. While the handler
    runs, :func:`kawa.functions.types.current_event` names ``event`` (predictions link to it). A batched
    handler (``batch=N``) gets it as a batch of one (:mod:`kawa.functions.batch`)."""
    if runtime.spec.batch:
        from kawa.functions.batch import invoke_single

        return invoke_single(runtime, event, attempt)
    ctx = Context(runtime, event, attempt)
    start = time.perf_counter()
    try:
        with handling(EventRef.of(event)):
            result = runtime.spec.handler(_argument(runtime, event), ctx)
            if runtime.spec.is_async or asyncio.iscoroutine(result):
                result = run_coroutine(result)  # the task copies this context: current_event holds in it
        replies = normalize_replies(runtime, event, result)
    except Exception as exc:
        ctx.record_failure(exc)  # an experiment arm's failure counts against it (the error-rate guardrail)
        return _failed(exc, attempt, time.perf_counter() - start)
    return Outcome("ok", replies, attempts=attempt, handler_s=time.perf_counter() - start, emitted=ctx._emitted)


def invoke_with_retries(runtime: Runtime, event: CloudEvent, stop: threading.Event) -> Outcome:
    """Attempts until success, a permanent error, or ``1 + retries`` failures (→ ``dead``). Waits between
    attempts with exponential backoff and jitter; a set ``stop`` ends the wait (→ ``abandoned``)."""
    spec = runtime.spec
    attempt = 1
    total = 0.0
    first: datetime | None = None
    while True:
        outcome = invoke(runtime, event, attempt)
        total += outcome.handler_s
        if outcome.status == "ok":
            outcome.handler_s = total
            return outcome
        first = first or outcome.last_failure
        outcome.first_failure = first
        runtime.metrics.add("failed_attempts")
        runtime.logger.warning(
            "%s attempt %d/%d failed on event %s: %s: %s", spec.qualified_name, attempt, spec.retries + 1,
            event.get_id(), type(outcome.error).__name__, deadletter.describe_error(outcome.error),
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
        with handling(EventRef.of(event)):
            result = runtime.spec.handler(_argument(runtime, event), ctx)
            if asyncio.iscoroutine(result):
                result = await result
        replies = normalize_replies(runtime, event, result)
    except Exception as exc:
        ctx.record_failure(exc)  # an experiment arm's failure counts against it (the error-rate guardrail)
        return _failed(exc, attempt, time.perf_counter() - start)
    return Outcome("ok", replies, attempts=attempt, handler_s=time.perf_counter() - start, emitted=ctx._emitted)


async def ainvoke_with_retries(runtime: Runtime, event: CloudEvent, stop: threading.Event) -> Outcome:
    """:func:`invoke_with_retries` for ``async`` handlers."""
    spec = runtime.spec
    attempt = 1
    total = 0.0
    first: datetime | None = None
    while True:
        outcome = await ainvoke(runtime, event, attempt)
        total += outcome.handler_s
        if outcome.status == "ok":
            outcome.handler_s = total
            return outcome
        first = first or outcome.last_failure
        outcome.first_failure = first
        runtime.metrics.add("failed_attempts")
        runtime.logger.warning(
            "%s attempt %d/%d failed on event %s: %s: %s", spec.qualified_name, attempt, spec.retries + 1,
            event.get_id(), type(outcome.error).__name__, deadletter.describe_error(outcome.error),
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


def produce_until_queued(produce: Callable[[], None], stop: threading.Event, function: str) -> None:
    """Run ``produce`` until the log takes the records, waiting out a full queue or an unreachable log
    with backoff; raises the last error when ``stop`` is set meanwhile. Replies of a partly queued batch
    are queued again: the same ids, which consumers deduplicate."""
    backoff = 0.1
    while True:
        try:
            produce()
            return
        except (BackendUnavailable, ProducerError) as exc:
            if stop.is_set():
                raise
            _log.warning("%s: the log does not take records now (%s); retrying in %.1f s", function, exc, backoff)
            if stop.wait(backoff):
                raise
            backoff = min(backoff * 2, 5.0)


def dead_letter_headers(
    headers: Sequence[tuple[str, bytes]],
    outcome: Outcome,
    function: str,
    source_topic: str = "",
    source_partition: int | None = None,
    source_offset: int | None = None,
) -> list[tuple[str, bytes]]:
    """The original headers plus the reason in the one dead-letter schema (:mod:`kawa.deadletter`): code,
    message in Kawa's words, attempts, the function, where the record came from (so a re-drive knows where
    to send it) and when it failed."""
    reason = deadletter.for_error(
        outcome.error,
        attempts=outcome.attempts,
        kind="function",
        component=function,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        first_failure=outcome.first_failure,
        last_failure=outcome.last_failure,
        reason=outcome.reason,
    )
    return deadletter.with_reason(headers, reason)


def undecodable(error: EventError) -> Outcome:
    """The outcome for a record that is not a CloudEvent: dead-lettered after its one (decoding) attempt."""
    return Outcome("dead", error=error, attempts=1, last_failure=deadletter.failure_time())


def foreign_bucket(reason: str) -> Outcome:
    """The outcome for a record of a bucket the trigger does not name, when it asks to dead-letter those."""
    error = EventError(f"not acted on: {reason}")
    return Outcome("dead", error=error, attempts=1, last_failure=deadletter.failure_time(),
                   reason=deadletter.FOREIGN_BUCKET)
