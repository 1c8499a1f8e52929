"""Every prediction as a CloudEvent on the ``predictions`` topic — cheap for the caller.

``record()`` appends a small tuple to a deque (no encoding, no I/O); a background thread turns queued
entries into CloudEvents and produces them in batches, flushing every ``flush_interval_s``.

Nothing is dropped: evaluation needs every decision, and a missing one biases its estimates. The queue is
bounded (``max_queue``); when it is full — the log is down or not keeping up — ``record()`` **blocks** the
caller until there is room, for at most ``block_timeout_s``, then raises :class:`~kawa.errors.PredictionLogFull`
(the caller's event fails and is retried; nothing was recorded for it). Waits are counted in ``blocked`` and
``blocked_s``. An entry stays queued until the log has taken it, and the producer keeps every record until the
log acknowledged it; :meth:`flush` returns only when everything recorded so far is acknowledged (a function
host calls it before it marks an event done).

Event ``kawa.prediction`` data, the schema :class:`kawa.events.schemas.Prediction`: ``model``, ``version``,
``event`` (the :class:`~kawa.events.EventRef` ``{"source", "id"}`` of the event the prediction served, if any)
and ``event_id`` (its id again, for readers of the older form), ``input_digest`` (sha256 of dtype, shape and
bytes) or ``input_ref``, ``input_shape``, ``output`` (the values when at most ``max_output_values``, else a
digest), ``latency_ms``, ``batch_size``, ``time_ms``; inside an experiment
(:func:`kawa.functions.types.allocating`) also ``experiment``, ``arm``, ``propensity``, ``unit``, ``acting`` and
``spec_hash``. Records written before the EventRef carry ``event_id`` alone; :func:`read_prediction` reads both.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from kawa.events.schemas import PREDICTION_EVENT
from kawa.functions.types import current_allocation

if TYPE_CHECKING:
    from kawa.events.ref import EventRef
    from kawa.events.schemas import Prediction
    from kawa.functions.types import Allocation
    from kawa.log.base import EventLog, Record

log = logging.getLogger("kawa.ml.predictions")
__all__ = ["PREDICTION_EVENT", "PredictionLogger", "digest", "read_prediction"]


def digest(x: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{x.dtype.str}{x.shape}".encode())
    h.update(np.ascontiguousarray(x).data)
    return "sha256:" + h.hexdigest()[:32]


class PredictionLogger:
    """Batched producer of prediction events. Thread-safe; :meth:`close` flushes what is queued."""

    def __init__(
        self,
        log: EventLog,
        topic: str = "predictions",
        *,
        source: str = "kawa/models",
        flush_interval_s: float = 0.05,
        max_queue: int = 100_000,
        max_output_values: int = 64,
        block_timeout_s: float = 30.0,
    ) -> None:
        from kawa.log.base import TopicSpec

        self.log, self.topic, self.source = log, topic, source
        self.max_output_values = max_output_values
        log.create_topic(TopicSpec(topic), exist_ok=True)
        self._producer = log.producer()
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self.max_queue = max_queue
        self.block_timeout_s = block_timeout_s
        self._room = threading.Condition()
        self._interval = flush_interval_s
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._closed = threading.Event()
        self.logged = 0
        self.blocked = 0  # record() calls that waited for room
        self.blocked_s = 0.0
        self.unencodable = 0  # entries that could not become an event (logged with the reason)
        self._thread = threading.Thread(target=self._run, name="kawa-prediction-log", daemon=True)
        self._thread.start()

    def record(
        self,
        model: str,
        version: int,
        inputs: np.ndarray,
        outputs: np.ndarray,
        latency_s: float,
        *,
        event: EventRef | None = None,
        event_id: str | None = None,
        input_ref: str | None = None,
        batch_size: int = 1,
        allocation: Allocation | None = None,
    ) -> None:
        """Queue one prediction (the arrays are only referenced; do not mutate them afterwards). Blocks while
        the queue is full, at most ``block_timeout_s``; then :class:`~kawa.errors.PredictionLogFull`.

        ``event``: the ref of the event the prediction served (what outcome joins use); ``event_id`` alone is
        the older form, kept for callers that have no source. ``allocation``: the experiment arm it was made
        under (default: :func:`~kawa.functions.types.current_allocation`)."""
        if len(self._queue) >= self.max_queue:
            self._wait_for_room(model)
        self._queue.append(
            (model, version, inputs, outputs, latency_s, event, event_id, input_ref, batch_size, time.time(),
             allocation or current_allocation())
        )  # fmt: skip

    def _wait_for_room(self, model: str) -> None:
        from kawa.errors import PredictionLogFull

        started = time.monotonic()
        deadline = started + self.block_timeout_s
        self.blocked += 1
        self._wake.set()
        with self._room:
            while len(self._queue) >= self.max_queue:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    self.blocked_s += time.monotonic() - started
                    raise PredictionLogFull(
                        f"the prediction log of {model} holds {len(self._queue)} unsent records and the event "
                        f"log {self.log.uri} has not taken any for {self.block_timeout_s:g}s; this prediction is "
                        "not recorded (its event fails and is retried). Check that the log is reachable."
                    )
                self._room.wait(min(left, 0.5))
        self.blocked_s += time.monotonic() - started

    def _event(self, entry: tuple[Any, ...]) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        from kawa.events import new_event, to_kafka
        from kawa.events.schemas import Prediction

        model, version, inputs, outputs, latency_s, ref, event_id, input_ref, batch_size, when, allocation = entry
        inputs = np.asarray(inputs)
        outputs = np.asarray(outputs)
        data: dict[str, Any] = {
            "model": model,
            "version": version,
            "event": ref,
            "event_id": ref.id if ref is not None else event_id,
            "input_shape": list(inputs.shape),
            "latency_ms": round(latency_s * 1000, 3),
            "batch_size": batch_size,
            "time_ms": int(when * 1000),
        }
        if allocation is not None:
            data.update(experiment=allocation.experiment, arm=allocation.arm, propensity=allocation.propensity,
                        unit=allocation.unit, acting=allocation.acting, spec_hash=allocation.spec_hash)
        if input_ref is not None:
            data["input_ref"] = input_ref
        else:
            data["input_digest"] = digest(inputs)
        if outputs.size <= self.max_output_values:
            data["output"] = outputs.tolist()
        else:
            data["output_digest"] = digest(outputs)
            data["output_shape"] = list(outputs.shape)
        event = new_event(
            PREDICTION_EVENT,
            self.source,
            Prediction.model_validate(data).data(),
            subject=f"{model}/{version}",
            extensions={"partitionkey": model},
        )
        return to_kafka(event)

    def _drain(self) -> None:
        with self._drain_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        produced = 0
        try:
            while self._queue:
                entry = self._queue[0]
                try:
                    key, value, headers = self._event(entry)
                except Exception as exc:
                    # A bug or an output that is not numeric: say so (counted), never in silence.
                    self.unencodable += 1
                    log.error("a prediction of %s cannot be encoded as an event (%s: %s); it is not logged",
                              entry[0], type(exc).__name__, exc)
                    self._queue.popleft()
                    continue
                # A failure here (the log refuses for now) leaves the entry queued for the next round.
                self._producer.produce(self.topic, value, key=key, headers=headers)
                self._queue.popleft()
                produced += 1
                if produced % 1000 == 0:
                    self._notify_room()
        finally:
            if produced:
                self._notify_room()
        if produced:
            self._producer.flush()
            self.logged += produced

    def _notify_room(self) -> None:
        with self._room:
            self._room.notify_all()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception as exc:  # the log refuses for now: entries stay queued, the next round retries
                log.warning("prediction log: the event log does not take records now (%s); %d queued",
                            exc, len(self._queue))
                self._closed.wait(min(5.0, max(self._interval, 0.5)))

    def flush(self, timeout: float | None = None) -> None:
        """Produce everything queued so far and wait for the log's acknowledgement (at most ``timeout``);
        :class:`~kawa.errors.ProducerError` when it did not come — nothing is dropped, try again."""
        self._drain()
        self._producer.flush(timeout)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Stop the thread, produce what is queued and wait for the log; raises when the log did not take it
        (the entries are lost with this process — their events were not marked done, so they come again)."""
        self._closed.set()
        self._wake.set()
        self._notify_room()
        self._thread.join(timeout=30)
        try:
            self._drain()
        finally:
            self._producer.close()


def read_prediction(record: Record) -> Prediction:
    """The :class:`~kawa.events.schemas.Prediction` of a ``kawa.prediction`` record (either form; see the module
    docstring); :class:`~kawa.errors.EventError` when the record is not one."""
    from kawa.errors import EventError
    from kawa.events import from_record
    from kawa.events.schemas import Prediction, read_data

    event = from_record(record)
    if event.get_type() != PREDICTION_EVENT:
        raise EventError(f"not a prediction record: its type is {event.get_type()!r}, not {PREDICTION_EVENT!r}")
    return read_data(Prediction, event.get_data())
