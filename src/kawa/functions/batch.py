"""Batched handlers: ``@app.function(batch=N)`` hands the handler up to ``N`` events at once.

A batched handler is ``(events: list[CloudEvent], ctx: kawa.BatchContext) -> None | list`` (sync only). It
does one model call, one vectorised computation for the batch, and acts per event through ``ctx[i]``, the
ordinary :class:`~kawa.functions.context.Context` of event ``i`` (its emits, ``new_event`` ids and decision
records belong to that event). Everything else stays per event, as for a one-event handler:

- each event is committed, marked done in the dedupe store and counted on its own, after everything it
  caused is acknowledged by the log;
- ``ctx.reject(i, error)`` dead-letters event ``i`` alone (a permanent error: no retry), the others succeed;
- when the handler raises, the batch is split: every event of it runs again alone (a batch of one) with the
  function's retries, backoff and dead-letter topic, so one bad event never holds back the others. Its
  first attempt's emits are sent again with the same ids (consumers deduplicate by ``source`` + ``id``);
- with ``ordered_by_key``, a batch holds at most one event per record key (the next one of a key waits
  until the previous finished), so per-key order holds across batches.

The return value is None or a list with one entry per event (None, a CloudEvent or a list of them): the
replies of that event. One event delivered alone (``kawa serve-function``, :func:`kawa.testing.invoke`, a
split batch) is a batch of one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kawa.errors import FunctionError
from kawa.functions.context import Context, Runtime
from kawa.functions.invoke import Outcome, PermanentError, _failed, normalize_replies
from kawa.functions.types import EventRef, Predictor, handling

if TYPE_CHECKING:
    import numpy as np

    from kawa.events import CloudEvent
    from kawa.functions.metrics import UserMetrics

__all__ = ["BatchContext", "invoke_batch", "invoke_single", "predict_each"]


class BatchContext:
    """The handler's view of one batch: ``ctx[i]`` is the :class:`~kawa.functions.context.Context` of event
    ``i``; ``ctx.reject(i, error)`` dead-letters that event alone; ``logger``, ``metrics``, ``config``,
    ``function`` and ``attempt`` as on a Context."""

    __slots__ = ("_contexts", "_rejected", "_runtime", "attempt", "events")

    def __init__(self, runtime: Runtime, events: Sequence[CloudEvent], attempt: int = 1) -> None:
        self._runtime = runtime
        self.events = list(events)
        self.attempt = attempt
        self._contexts = [Context(runtime, event, attempt) for event in self.events]
        self._rejected: dict[int, BaseException] = {}

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> Context:
        return self._contexts[index]

    @property
    def function(self) -> Any:
        return self._runtime.spec

    @property
    def config(self) -> dict[str, Any]:
        return self._runtime.function_config

    @property
    def logger(self) -> Any:
        return self._runtime.logger

    @property
    def metrics(self) -> UserMetrics:
        return self._runtime.metrics.user

    def reject(self, index: int, error: BaseException) -> None:
        """Dead-letter event ``index`` with ``error`` as the reason (no retry); emit nothing for it."""
        if not 0 <= index < len(self.events):
            raise FunctionError(f"ctx.reject({index}): the batch has events 0..{len(self.events) - 1}")
        self._rejected[index] = error

    def rejected(self, index: int) -> bool:
        return index in self._rejected


def predict_each(model: Predictor, rows: Sequence[Any], refs: Sequence[EventRef]) -> list[np.ndarray[Any, Any]]:
    """One model call for the rows of several events (``rows[i]``: event ``i``'s inputs, 2-D), split back per
    event; each event's prediction is recorded linked to ``refs[i]``. A predictor without a batch call (a
    test fake, an experiment arm) is called once per event."""
    import numpy as np

    batch = getattr(model, "predict_batch", None)
    if batch is not None and len(rows) > 1:
        return list(batch([np.asarray(r) for r in rows], events=list(refs)))
    out = []
    for r, ref in zip(rows, refs, strict=True):
        with handling(ref):
            out.append(np.asarray(model.predict(r)))
    return out


def _run(runtime: Runtime, ctx: BatchContext) -> list[Any]:
    events = ctx.events
    result = runtime.spec.handler(events, ctx)
    if result is None:
        return [None] * len(events)
    if not isinstance(result, list | tuple) or len(result) != len(events):
        raise FunctionError(
            f"batched function {runtime.spec.qualified_name} returned {type(result).__name__}; return None or a "
            f"list with one entry per event ({len(events)}): None, a CloudEvent or a list of them"
        )
    return list(result)


def _outcome(runtime: Runtime, ctx: BatchContext, i: int, result: Any, attempt: int, handler_s: float) -> Outcome:
    event = ctx.events[i]
    error = ctx._rejected.get(i)
    if error is not None:
        error = error if isinstance(error, Exception) else PermanentError(str(error))
        ctx[i].record_failure(error)
        outcome = _failed(error, attempt, handler_s)
        outcome.status = "dead"
        return outcome
    replies = normalize_replies(runtime, event, result)
    return Outcome("ok", replies, attempts=attempt, handler_s=handler_s, emitted=ctx[i]._emitted)


def invoke_single(runtime: Runtime, event: CloudEvent, attempt: int = 1) -> Outcome:
    """One attempt of a batched handler on one event (a batch of one), as :func:`kawa.functions.invoke.invoke`
    makes for a one-event handler. A rejected event is ``permanent``."""
    start = time.perf_counter()
    ctx = BatchContext(runtime, [event], attempt)
    try:
        with handling(EventRef.of(event)):
            results = _run(runtime, ctx)
        outcome = _outcome(runtime, ctx, 0, results[0], attempt, time.perf_counter() - start)
    except Exception as exc:
        ctx[0].record_failure(exc)
        return _failed(exc, attempt, time.perf_counter() - start)
    if outcome.status == "dead":
        outcome.status = "permanent"  # invoke_with_retries turns it into "dead" without retrying
    return outcome


def invoke_batch(runtime: Runtime, events: Sequence[CloudEvent]) -> list[Outcome] | None:
    """The first attempt at a whole batch: one outcome per event (``ok``, or ``dead`` for a rejected one), or
    None when the handler raised (the caller then runs each event alone, with retries)."""
    start = time.perf_counter()
    ctx = BatchContext(runtime, events, 1)
    try:
        results = _run(runtime, ctx)
        per_event = (time.perf_counter() - start) / max(1, len(events))
        return [_outcome(runtime, ctx, i, r, 1, per_event) for i, r in enumerate(results)]
    except Exception as exc:
        runtime.metrics.add("failed_attempts")
        runtime.logger.warning(
            "%s: a batch of %d events failed (%s: %s); running each of them alone", runtime.spec.qualified_name,
            len(events), type(exc).__name__, exc,
        )  # fmt: skip
        return None
