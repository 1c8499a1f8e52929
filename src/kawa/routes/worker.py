"""Running one route: poll the source, run the steps, write the sinks, dead-letter failures, commit progress.

Guarantees (see docs/routes.md):

- **At-least-once source → sink.** Source progress is committed only after every message up to that point
  reached all sinks or the dead-letter channel (messages an ``aggregate`` still holds excepted: the commit
  stays before them).
- **Redelivery.** A message whose steps or sink write fail is retried ``max-redeliveries`` times with the
  route's backoff, then written to the dead-letter endpoint with the reason. Rejections
  (:class:`~kawa.errors.MessageRejected`: invalid, undecodable) are dead-lettered at once; the route goes on.
- **Crash-only.** Any other failure (the dead-letter endpoint itself failing, a source error) restarts the
  route's session after a backoff: the source re-reads from its committed progress.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import IO, Any

from kawa import deadletter
from kawa.errors import BackendUnavailable, KawaError, MessageRejected, ProducerError
from kawa.routes.components.base import RouteContext, Sink, Source, build_sink, build_source
from kawa.routes.message import Message, Token
from kawa.routes.processors import Pipeline, build_pipeline
from kawa.routes.spec import EndpointSpec, RouteSpec

log = logging.getLogger("kawa.routes")


@dataclass
class RouteStats:
    received: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    redeliveries: int = 0
    skipped_foreign: int = 0  # notifications of buckets the route's source or fetch step does not name
    restarts: int = 0
    state: str = "starting"
    last_error: str | None = None
    started_at: str = ""


def default_dead_letter(route_id: str) -> EndpointSpec:
    return EndpointSpec.parse(f"topic:routes.{route_id}.dlq")


def _backbone_down(exc: BaseException) -> bool:
    """The log or the store does not answer (or does not acknowledge): the message is fine, so it is never
    dead-lettered for it; the session restarts from its committed progress instead."""
    return isinstance(exc, BackendUnavailable | ProducerError)


class _Stopped(Exception):
    """The route is stopping in the middle of a batch: leave it uncommitted (it is redelivered)."""


class RouteWorker:
    """Runs one route until :meth:`stop`. Use :meth:`start` for a thread or :meth:`run` in the caller's."""

    def __init__(self, spec: RouteSpec, ctx: RouteContext, *, idle_poll_s: float = 0.2) -> None:
        self.spec = spec
        self.ctx = ctx
        self.idle_poll_s = idle_poll_s
        self.stats = RouteStats(started_at=datetime.now(UTC).isoformat())
        self._thread: threading.Thread | None = None
        self._last_status = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"route-{self.spec.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.ctx.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Run sessions until stopped; a failed session is restarted after a backoff."""
        failures = 0
        while not self.ctx.stop.is_set():
            try:
                self._session()
                break
            except _Stopped:
                break
            except Exception as exc:
                failures += 1
                self.stats.restarts += 1
                self.stats.state = "restarting"
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if _backbone_down(exc):  # said once per restart, without a traceback: the fix is elsewhere
                    log.warning("route %s waits for the backbone (%s); restarting from its committed progress",
                                self.spec.id, exc)
                else:
                    log.error("route %s failed (%s); restarting", self.spec.id, self.stats.last_error, exc_info=exc)
                self._write_status(force=True)
                self.ctx.stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
        self.stats.state = "stopped"
        self._write_status(force=True)

    # --- one session -------------------------------------------------------------------------------

    def _session(self) -> None:
        spec, ctx = self.spec, self.ctx
        source = build_source(spec.from_, ctx)
        with self._exclusive(getattr(source, "exclusive", True)) as acquired:
            if not acquired:
                return
            pipeline = build_pipeline(spec.steps, ctx)
            sinks = [build_sink(e, ctx) for e in spec.to]
            dead = build_sink(spec.errors.dead_letter or default_dead_letter(spec.id), ctx)
            opened: list[Any] = []
            parts: list[Any] = [*sinks, dead, source]
            try:
                for part in parts:
                    part.open()
                    opened.append(part)
                self.stats.state = "running"
                self._write_status(force=True)
                while not ctx.stop.is_set():
                    self._step(source, pipeline, sinks, dead)
                self._drain(source, pipeline, sinks, dead)
            finally:
                pipeline.close()
                for part in reversed(opened):
                    with contextlib.suppress(Exception):
                        part.close()

    def _step(self, source: Source, pipeline: Pipeline, sinks: Sequence[Sink], dead: Sink) -> None:
        messages = source.poll(self.spec.batch, self.idle_poll_s)
        self.stats.received += len(messages)
        outputs: list[Message] = []
        finished: list[Token] = []
        for message in messages:
            out = self._process(message, pipeline, dead)
            if out is not None:
                outputs.extend(out)
            finished.extend(message.tokens)
        outputs.extend(pipeline.tick(time.monotonic()))
        if outputs:
            self._write(outputs, sinks, dead)
        finished.extend(t for m in outputs for t in m.tokens)
        if finished:
            held = pipeline.held()
            source.ack([t for t in finished if t not in held])
            source.commit()
        self._write_status()

    def _drain(self, source: Source, pipeline: Pipeline, sinks: Sequence[Sink], dead: Sink) -> None:
        """On a clean stop, commit what is finished; held aggregates stay uncommitted (redelivered later)."""
        source.commit()

    def _process(self, message: Message, pipeline: Pipeline, dead: Sink) -> list[Message] | None:
        """The step outputs of ``message``, or None when it was dead-lettered. Rejections and permanent
        errors (undecodable data, a decompression bomb: :func:`kawa.deadletter.is_permanent`) are
        dead-lettered after their one attempt; other failures are redelivered first."""
        policy = self.spec.errors
        if message.error is not None:
            self._dead_letter(dead, message, message.error, 1, reason=message.error_reason or deadletter.UNDECODABLE)
            return None
        attempt = 0
        first: datetime | None = None
        while True:
            try:
                outputs = pipeline.run(message)
            except Exception as exc:
                attempt += 1
                first = first or deadletter.failure_time()
                if isinstance(exc, MessageRejected) or deadletter.is_permanent(exc):
                    self._dead_letter(dead, message, exc, attempt, first=first)
                    return None
                if self.ctx.stop.is_set():
                    raise _Stopped from exc
                if attempt > policy.max_redeliveries:
                    if _backbone_down(exc):
                        raise
                    self._dead_letter(dead, message, exc, attempt, first=first)
                    return None
                self.stats.redeliveries += 1
                log.warning("route %s: message %s failed (%s), redelivery %d", self.spec.id, message.id,
                            deadletter.describe_error(exc), attempt)
                self.ctx.stop.wait(policy.delay_for(attempt))
                continue
            refused = [out for out in outputs if out.error is not None]  # a step refused a part (foreign bucket)
            for out in refused:
                self._dead_letter(dead, out, out.error or "", 1, reason=out.error_reason)
            return [out for out in outputs if out.error is None] if refused else outputs

    def _write(self, outputs: list[Message], sinks: Sequence[Sink], dead: Sink) -> None:
        """Write a batch to every sink; a batch that keeps failing is retried message by message so that
        only the messages a sink refuses go to the dead letter."""
        policy = self.spec.errors
        for sink in sinks:
            attempt = 0
            while True:
                try:
                    sink.write(outputs)
                    break
                except MessageRejected as exc:
                    if len(outputs) == 1:
                        self._dead_letter(dead, outputs[0], exc, attempt + 1)
                        break
                    self._write_each(outputs, sink, dead)
                    break
                except Exception as exc:
                    attempt += 1
                    if self.ctx.stop.is_set():
                        raise _Stopped from exc
                    if attempt > policy.max_redeliveries:
                        if _backbone_down(exc):
                            raise  # nothing is acknowledged or committed: the session reads it again
                        if len(outputs) == 1:
                            self._dead_letter(dead, outputs[0], exc, attempt, reason=deadletter.NOT_DELIVERED)
                        else:
                            self._write_each(outputs, sink, dead)
                        break
                    self.stats.redeliveries += 1
                    log.warning("route %s: sink write failed (%s), redelivery %d", self.spec.id, exc, attempt)
                    self.ctx.stop.wait(policy.delay_for(attempt))
        self.stats.delivered += len(outputs)

    def _write_each(self, outputs: list[Message], sink: Sink, dead: Sink) -> None:
        for message in outputs:
            try:
                sink.write([message])
            except Exception as exc:
                if _backbone_down(exc):
                    raise
                self._dead_letter(dead, message, exc, 1, reason=None if deadletter.is_permanent(exc)
                                  else deadletter.NOT_DELIVERED)

    def _dead_letter(
        self, dead: Sink, message: Message, error: BaseException | str, attempts: int, *,
        reason: str | None = None, first: datetime | None = None,
    ) -> None:
        """Write ``message`` with the reason (:mod:`kawa.deadletter`'s schema) to the dead-letter endpoint;
        failing here fails the session."""
        failure = error if isinstance(error, BaseException) else MessageRejected(error)
        position = next((t for t in message.tokens if isinstance(t, tuple) and len(t) == 2), None)
        why = deadletter.for_error(
            failure, attempts=max(1, attempts), kind="route", component=self.spec.id, reason=reason,
            source_topic=self._source_topic,
            source_partition=position[0] if position and isinstance(position[0], int) else None,
            source_offset=position[1] if position and isinstance(position[1], int) else None,
            first_failure=first,
        )
        log.warning("route %s: dead-lettering message %s (%s): %s", self.spec.id, message.id, why.reason, why.message)
        headers = {
            **{k: v for k, v in message.headers.items()
               if isinstance(v, str | int | float | bool) and not deadletter.is_reason_header(k)},
            **why.extensions(),
        }
        dead.write([message.derive(None, headers=headers)])
        self.stats.dead_lettered += 1

    @property
    def _source_topic(self) -> str | None:
        """The topic a topic or bucket source reads (for dead letters' re-drive), else None."""
        uri = self.spec.from_.uri
        scheme, _, rest = uri.partition(":")
        if scheme == "topic":
            return rest.split("?")[0].strip("/") or None
        if scheme == "bucket":
            topic = self.spec.from_.options.get("topic")
            return str(topic) if topic else rest.split("?")[0].strip("/") or None
        return None

    # --- exclusivity and status --------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self, exclusive: bool) -> Iterator[bool]:
        """For sources two runners must not share, hold ``<home>/routes/locks/<id>.lock`` (waiting for it)."""
        if not exclusive:
            yield True
            return
        path = self.ctx.home_path("locks", f"{self.spec.id}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(path, "a+")  # noqa: SIM115  # held for the whole session
        try:
            waiting_logged = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting_logged:
                        log.info("route %s runs elsewhere; standing by until its lock is free", self.spec.id)
                        self.stats.state = "standby"
                        waiting_logged = True
                    if self.ctx.stop.wait(0.5):
                        yield False
                        return
            yield True
        finally:
            handle.close()

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < 2.0:
            return
        self._last_status = now
        self.stats.skipped_foreign = self.ctx.counters.get("skipped_foreign", 0)
        path = self.ctx.home_path("status", f"{self.spec.id}.json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps({**asdict(self.stats), "pid": os.getpid()}))
            os.replace(tmp, path)
        except OSError:
            log.debug("cannot write route status %s", path, exc_info=True)


def run_route(spec: RouteSpec, ctx: RouteContext) -> RouteWorker:
    """Start ``spec`` in a thread and return its worker (call ``stop()`` to end it)."""
    worker = RouteWorker(spec, ctx)
    worker.start()
    return worker


__all__ = ["KawaError", "RouteStats", "RouteWorker", "default_dead_letter", "run_route"]
