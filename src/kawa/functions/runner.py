"""One function inside a host: its consumer, buffer, replicas, autoscaler, commits.

Threads: one *poll thread* owns the consumer (poll, commit) and the offset tracker, takes records in
(decode → filter → dedupe check → buffer), writes the done-marks and ticks the autoscaler, whose wish the
project's replica quota may cut (``grant``). Replica threads run invocations and pull the next buffered event
themselves when they finish one. A batched function (``batch=N``) takes up to N ready events per call, at most
one per key when ordered by key; each is still delivered, marked and committed alone (:mod:`kawa.functions.batch`).

Delivery: an event's offset counts as finished only after its replies and dead letters are flushed to the
log and it is marked done in the dedupe store; commits never pass an unfinished offset (see
:mod:`kawa.functions.offsets`). Records of partitions lost in a rebalance are dropped from the buffer and
their tracking is reset, so a stale completion never moves a commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kawa.errors import BackendUnavailable, CommitFailed, EventError, ProducerError
from kawa.events import CloudEvent, EventRef
from kawa.events.s3 import record_events
from kawa.functions.autoscaler import KPA
from kawa.functions.batch import invoke_batch
from kawa.functions.context import Runtime
from kawa.functions.dedupe import DEAD_LETTERED, DONE
from kawa.functions.invoke import (
    Outcome,
    ainvoke_with_retries,
    dead_letter_headers,
    foreign_bucket,
    invoke_with_retries,
    produce_until_queued,
    send_replies,
    undecodable,
)
from kawa.functions.metrics import FunctionMetrics
from kawa.functions.offsets import OffsetTracker
from kawa.functions.options import HostOptions
from kawa.functions.replicas import Replica, make_replica
from kawa.log.base import Consumer, Record, TopicPartition

__all__ = ["FunctionRunner", "HostOptions", "Job"]

log = logging.getLogger("kawa.functions.host")


class _LogDown(Exception):
    """The log did not acknowledge a batch's records in time; the batch stays unmarked."""


@dataclass(slots=True)
class Job:
    record: Record
    tp: TopicPartition
    epoch: int
    event: CloudEvent | None
    order_key: tuple[TopicPartition, bytes | None] | None
    outcome: Outcome | None = None  # preset for records that are not CloudEvents


class FunctionRunner:
    """Runs one function's events from a consumer group (see the module docstring for the threads)."""

    def __init__(self, runtime: Runtime, consumer: Consumer, options: HostOptions) -> None:
        self.runtime = runtime
        self.spec = spec = runtime.spec
        self.consumer = consumer
        self.options = options
        self.kpa = KPA(spec.scaling_policy())
        self.tracker = OffsetTracker()
        cap = spec.concurrency * (spec.max_scale or 64) * max(1, spec.batch)  # a batched function buffers its batches
        self.max_buffered = options.max_buffered or max(64, 4 * cap)
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._ready: deque[Job] = deque()
        self._waiting: dict[tuple[TopicPartition, bytes | None], deque[Job]] = {}
        self._buffered = 0
        self._in_flight = 0
        self._replicas: list[Replica] = []
        self._retired: list[Replica] = []
        self._to_mark: list[tuple[Job, Outcome]] = []
        self._epochs: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._serial = 0
        self._stopping = threading.Event()  # no more intake
        self._abort = threading.Event()  # end retry waits
        self._thread = threading.Thread(target=self._poll_loop, name=f"kawa-fn-{spec.name}", daemon=True)
        self._last_poll = time.monotonic()
        self.error: BaseException | None = None
        self.grant: Callable[[int], int] = lambda want: want  # set by the host

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            initial = self.spec.scaling_policy().clamp(self.spec.initial_scale)
            self._scale_to(initial)
        self._thread.start()

    @property
    def metrics(self) -> FunctionMetrics:
        return self.runtime.metrics

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this runner's consumer holds (as of its last poll)."""
        return frozenset(self._assigned)

    def begin_stop(self) -> None:
        """Stop taking events and end retry waits now; :meth:`stop` then waits for the drain."""
        self._stopping.set()
        self._abort.set()

    def close(self) -> None:
        self.runtime.close()

    def stop(self, timeout: float | None = None) -> None:
        """Drain: stop taking events, let running invocations finish (retry waits end early and their events
        stay uncommitted), flush, mark, commit, leave the group."""
        timeout = self.options.drain_timeout_s if timeout is None else timeout
        self._stopping.set()
        self._abort.set()
        self._thread.join(timeout + 5.0)
        with self._lock:
            replicas = self._replicas + self._retired
        for replica in replicas:
            replica.join(1.0)

    # --- the poll thread --------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        next_tick = next_commit = time.monotonic()
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._poll_once()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + self.options.tick_s
                self._flush_marks()
                if now >= next_commit:
                    self._commit()
                    next_commit = now + self.options.commit_interval_s
                backoff = 0.1
            except _LogDown as exc:  # the log did not acknowledge in time: nothing is marked, try again
                self.error = exc
                log.warning("%s: waiting for the event log to acknowledge (%s); retrying in %.1f s",
                            self.spec.qualified_name, exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # a backend hiccup: keep the host alive, retry with backoff
                self.error = exc
                log.exception("%s: poll loop error; retrying in %.1f s", self.spec.qualified_name, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._drain()

    def _poll_once(self) -> None:
        with self._lock:
            full = self._buffered >= self.max_buffered
            if full and time.monotonic() - self._last_poll < 10.0:
                self._space.wait(self.options.poll_timeout_s)
        if full and time.monotonic() - self._last_poll < 10.0:
            # No poll while full, but a rebalance still drops moved partitions at once (their new owner runs them).
            self._sync_assignment()
            return
        with self._lock:
            timeout = 0.0 if self._to_mark else self.options.poll_timeout_s
        records = self.consumer.poll(timeout=timeout, max_records=min(500, max(1, self.max_buffered - self._buffered)))
        self._last_poll = time.monotonic()
        self._sync_assignment()
        if records:
            self._intake(records)

    def _sync_assignment(self) -> None:
        current = self.consumer.assignment()
        if current == self._assigned:
            return
        revoked = self._assigned - current
        self._assigned = set(current)
        if revoked:
            log.info("%s: partitions revoked: %s", self.spec.qualified_name, sorted(revoked))
            self._forget(revoked)

    def _forget(self, revoked: set[TopicPartition]) -> None:
        """Stop tracking partitions: their buffered events are dropped (the new reader gets them again) and
        completions still running for them no longer move a commit."""
        self.tracker.reset(revoked)
        for tp in revoked:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
        with self._lock:
            keep = deque(job for job in self._ready if job.tp not in revoked)
            dropped = len(self._ready) - len(keep)
            self._ready = keep
            for key in [k for k in self._waiting if k[0] in revoked]:
                dropped += len(self._waiting.pop(key))
            self._buffered -= dropped

    def _intake(self, records: list[Record]) -> None:
        spec, metrics, dedupe, scope = self.spec, self.runtime.metrics, self.runtime.dedupe, self.runtime.scope
        jobs: list[Job] = []
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in self._assigned:
                continue
            last = self.tracker.last(tp)
            if last is not None and record.offset <= last:
                # The partition was rewound (lost and regained between two polls): start its tracking over.
                log.info("%s: %s[%d] rewound to %d", spec.qualified_name, tp.topic, tp.partition, record.offset)
                jobs = [job for job in jobs if job.tp != tp]
                self._forget({tp})
            self.tracker.add(tp, record.offset)
            epoch = self._epochs.get(tp, 0)
            order_key = (tp, record.key) if spec.ordered_by_key else None
            try:
                events = record_events(record)  # one per S3 record, each with its own id
            except EventError as exc:
                jobs.append(Job(record, tp, epoch, None, order_key, undecodable(exc)))
                continue
            self.tracker.expect(tp, record.offset, len(events))
            for event in events:
                foreign = spec.scope.foreign(event)
                if foreign is not None:  # a record of a bucket the trigger does not name: never handled
                    metrics.skipped_foreign += 1
                    spec.scope.note(log, spec.qualified_name, event)
                    if spec.scope.dead_letters:
                        jobs.append(Job(record, tp, epoch, event, order_key, foreign_bucket(foreign)))
                    else:
                        self.tracker.finish(tp, record.offset)
                    continue
                reason = spec.filter.explain(event)
                if reason is not None:
                    metrics.filtered += 1
                    self.tracker.finish(tp, record.offset)
                    continue
                if dedupe.status(scope, EventRef.of(event).key()) in (DONE, DEAD_LETTERED):
                    metrics.duplicates += 1
                    self.tracker.finish(tp, record.offset)
                    continue
                jobs.append(Job(record, tp, epoch, event, order_key))
        metrics.received += len(records)
        if not jobs:
            return
        with self._lock:
            for job in jobs:
                self._enqueue(job)
            if not any(not r.retiring for r in self._replicas) and self._ready:
                now = time.monotonic()  # scale from zero at once, without waiting for the tick
                self.kpa.record(now, self._demand())
                self._apply(self.kpa.decide(now, 0).desired)
            self._dispatch()

    # --- buffer and dispatch (under self._lock) ---------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        self._buffered += 1
        if job.order_key is None:
            self._ready.append(job)
            return
        waiting = self._waiting.get(job.order_key)
        if waiting is None:
            self._waiting[job.order_key] = deque()
            self._ready.append(job)
        else:
            waiting.append(job)

    def _pop_ready(self) -> list[Job]:
        """The next unit of work: one ready job, or up to ``batch`` of them for a batched function."""
        n = min(len(self._ready), max(1, self.spec.batch))
        jobs = [self._ready.popleft() for _ in range(n)]
        self._buffered -= n
        self._in_flight += n
        return jobs

    def _dispatch(self) -> None:
        for replica in self._replicas:
            while self._ready and replica.in_flight < replica.concurrency:
                replica.in_flight += 1
                replica.submit(self._pop_ready())
            if not self._ready:
                break

    def _demand(self) -> int:
        return self._in_flight + len(self._ready)

    def _scale_to(self, desired: int) -> None:
        desired = self.grant(desired)
        active = self._replicas
        if desired > len(active):
            for _ in range(desired - len(active)):
                self._serial += 1
                name = f"kawa-fn-{self.spec.name}-r{self._serial}"
                active.append(make_replica(self, name, self.spec.concurrency, self.spec.is_async))
        elif desired < len(active):
            order = sorted(range(len(active)), key=lambda i: (active[i].in_flight, -i))  # idle first, newest first
            gone = set(order[: len(active) - desired])
            for i in gone:
                active[i].retire()
                self._retired.append(active[i])
            self._replicas = [r for i, r in enumerate(active) if i not in gone]

    def _apply(self, desired: int) -> None:
        if desired != len(self._replicas):
            self.runtime.metrics.scale_events += 1
            log.debug("%s: scale %d → %d", self.spec.qualified_name, len(self._replicas), desired)
            self._scale_to(desired)
        self.runtime.metrics.desired_replicas = desired

    def _tick(self, now: float) -> None:
        with self._lock:
            demand = self._demand()
            self.kpa.record(now, demand)
            decision = self.kpa.decide(now, len(self._replicas))
            self._apply(decision.desired)
            self._dispatch()
            m = self.runtime.metrics
            m.replicas, m.in_flight, m.queued, m.panicking = (
                len(self._replicas), self._in_flight, self._buffered, decision.panicking,
            )
            self._retired = [r for r in self._retired if r.alive()]

    # --- replica callbacks ------------------------------------------------------------------------

    def execute(self, jobs: list[Job]) -> list[Outcome]:
        """Run a unit of work: one job, or a batch (one handler call; each event alone again if it raised)."""
        if len(jobs) == 1:
            return [self._execute_one(jobs[0])]
        handled = [job for job in jobs if job.outcome is None]
        events = [job.event for job in handled if job.event is not None]
        outcomes = invoke_batch(self.runtime, events) if events else []
        if outcomes is None:
            return [self._execute_one(job) for job in jobs]
        by_job = dict(zip(map(id, handled), outcomes, strict=True))
        return [self._deliver(job, job.outcome or by_job[id(job)]) for job in jobs]

    def _execute_one(self, job: Job) -> Outcome:
        if job.outcome is not None:
            outcome = job.outcome
        else:
            assert job.event is not None
            outcome = invoke_with_retries(self.runtime, job.event, self._abort)
        return self._deliver(job, outcome)

    async def _aexecute(self, job: Job) -> Outcome:
        if job.outcome is not None:
            return self._deliver(job, job.outcome)
        assert job.event is not None
        outcome = await ainvoke_with_retries(self.runtime, job.event, self._abort)
        return self._deliver(job, outcome)

    async def aexecute(self, jobs: list[Job]) -> list[Outcome]:
        return [await self._aexecute(job) for job in jobs]  # async handlers are never batched: one job

    def _deliver(self, job: Job, outcome: Outcome) -> Outcome:
        """Queue the event's replies or its dead letter on the log. A log that refuses them for a while
        (queue full, broker down) is waited for; only a stop ends the wait (→ ``abandoned``: redelivered)."""
        if outcome.status == "ok":
            try:
                produce_until_queued(lambda: send_replies(self.runtime, outcome.replies, job.record.key), self._abort,
                                     self.spec.qualified_name)  # fmt: skip
            except (BackendUnavailable, ProducerError):
                outcome.status = "abandoned"
                return outcome
            except Exception as exc:
                log.error("%s: cannot send replies: %s", self.spec.qualified_name, exc)
                outcome = Outcome("dead", error=exc, attempts=outcome.attempts, handler_s=outcome.handler_s)
        if outcome.status == "dead":
            record = job.record
            headers = dead_letter_headers(
                record.headers, outcome, self.spec.qualified_name, record.topic, record.partition, record.offset
            )
            try:
                produce_until_queued(lambda: self.runtime.producer.produce(
                    self.spec.dead_letter_topic, record.value, key=record.key, headers=headers
                ), self._abort, self.spec.qualified_name)  # fmt: skip
            except Exception as exc:
                log.error("%s: cannot dead-letter %s[%d]@%d (%s); it stays uncommitted and comes again",
                          self.spec.qualified_name, record.topic, record.partition, record.offset, exc)
                outcome.status = "abandoned"
        return outcome

    def finish(self, jobs: list[Job], outcomes: list[Outcome], replica: Replica) -> list[Job] | None:
        with self._lock:
            replica.in_flight -= 1
            self._in_flight -= len(jobs)
            for job, outcome in zip(jobs, outcomes, strict=True):
                self._to_mark.append((job, outcome))
                if job.order_key is not None:
                    waiting = self._waiting.get(job.order_key)
                    if waiting:
                        self._ready.append(waiting.popleft())
                    elif waiting is not None:
                        del self._waiting[job.order_key]
            nxt: list[Job] | None = None
            if self._ready and not replica.retiring and not self._stopping.is_set():
                replica.in_flight += 1
                nxt = self._pop_ready()
            elif self._ready and not self._stopping.is_set():
                self._dispatch()
            self._space.notify()
            return nxt

    # --- marks and commits (poll thread) ----------------------------------------------------------

    def _flush_marks(self) -> None:
        with self._lock:
            batch, self._to_mark = self._to_mark, []
        if not batch:
            return
        try:
            self._mark(batch)
        except BaseException as exc:
            with self._lock:  # keep them: their offsets must not be lost (the loop retries)
                self._to_mark[:0] = batch
            if isinstance(exc, BackendUnavailable | ProducerError):
                raise _LogDown(str(exc)) from exc
            raise

    def _mark(self, batch: list[tuple[Job, Outcome]]) -> None:
        """Mark a batch done, after the log acknowledged everything its events caused (replies, emitted
        events, dead letters, prediction records): a record that is not acknowledged keeps its input
        unmarked and uncommitted, so the input comes again rather than its effects being lost."""
        runtime, metrics = self.runtime, self.runtime.metrics
        runtime.flush(self.options.flush_timeout_s)
        runtime.dedupe.mark(runtime.scope, [
            (EventRef.of(job.event).key(), DONE if outcome.status == "ok" else DEAD_LETTERED)
            for job, outcome in batch
            if job.event is not None and outcome.status != "abandoned"
        ])
        now_ms = time.time() * 1000.0
        for job, outcome in batch:
            if outcome.status == "abandoned":
                continue
            if outcome.status == "ok":
                metrics.succeeded += 1
                e2e = (now_ms - job.record.timestamp_ms) / 1000.0 if job.record.timestamp_ms else None
                metrics.finished(outcome.handler_s, e2e)
            else:
                metrics.dead_lettered += 1
            if self._epochs.get(job.tp, 0) == job.epoch:
                self.tracker.finish(job.tp, job.record.offset)

    def _drain_marks(self) -> bool:
        """:meth:`_flush_marks` during the drain: False when the log did not acknowledge (nothing marked)."""
        try:
            self._flush_marks()
        except _LogDown:
            return False
        return True

    def _commit(self) -> None:
        offsets = {tp: off for tp, off in self.tracker.committable().items() if tp in self._assigned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except CommitFailed as exc:
            log.info("%s: commit refused (%s); re-reading the assignment", self.spec.qualified_name, exc)
            self._sync_assignment()
            return
        self.tracker.mark_committed(offsets)

    def _drain(self) -> None:
        log.info("%s: draining", self.spec.qualified_name)
        deadline = time.monotonic() + self.options.drain_timeout_s
        with self._lock:
            self._buffered -= len(self._ready) + sum(len(w) for w in self._waiting.values())
            self._ready.clear()
            self._waiting.clear()
        while True:
            with self._lock:
                busy = self._in_flight
            marked = self._drain_marks()
            if (busy == 0 and marked) or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if busy:
            log.warning("%s: %d invocation(s) still running after the drain timeout; their events will be "
                        "delivered again", self.spec.qualified_name, busy)
        if not self._drain_marks():
            log.warning("%s: the log did not acknowledge the last events' records; they stay uncommitted and "
                        "come again", self.spec.qualified_name)
        try:
            self._commit()
        except Exception:
            log.exception("%s: final commit failed; uncommitted events come again", self.spec.qualified_name)
        with self._lock:
            self._scale_to(0)
            self.runtime.metrics.replicas = 0
        log.info("%s: drained; leaving the group", self.spec.qualified_name)
        try:
            self.consumer.close()
        except Exception:
            log.exception("%s: closing the consumer failed", self.spec.qualified_name)
