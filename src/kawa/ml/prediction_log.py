"""Every prediction as a CloudEvent on the ``predictions`` topic — cheap for the caller.

``record()`` appends a small tuple to a deque (no encoding, no I/O); a background thread turns queued
entries into CloudEvents and produces them in batches, flushing every ``flush_interval_s``. The queue is
bounded (``max_queue``): when the log cannot keep up, the oldest entries are dropped and counted in
``dropped`` rather than slowing predictions down.

Event ``kawa.prediction`` data: ``model``, ``version``, ``event_id`` (the event the prediction served, if
any), ``input_digest`` (sha256 of dtype, shape and bytes) or ``input_ref``, ``input_shape``, ``output``
(the values when at most ``max_output_values``, else a digest), ``latency_ms``, ``batch_size``, ``time_ms``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kawa.log.base import EventLog

log = logging.getLogger("kawa.ml.predictions")
PREDICTION_EVENT = "kawa.prediction"


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
    ) -> None:
        from kawa.log.base import TopicSpec

        self.log, self.topic, self.source = log, topic, source
        self.max_output_values = max_output_values
        log.create_topic(TopicSpec(topic), exist_ok=True)
        self._producer = log.producer()
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=max_queue)
        self._interval = flush_interval_s
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._closed = threading.Event()
        self.logged = 0
        self.dropped = 0
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
        event_id: str | None = None,
        input_ref: str | None = None,
        batch_size: int = 1,
    ) -> None:
        """Queue one prediction (the arrays are only referenced; do not mutate them afterwards)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((model, version, inputs, outputs, latency_s, event_id, input_ref, batch_size, time.time()))

    def _event(self, entry: tuple[Any, ...]) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        from kawa.events import new_event, to_kafka

        model, version, inputs, outputs, latency_s, event_id, input_ref, batch_size, when = entry
        inputs = np.asarray(inputs)
        outputs = np.asarray(outputs)
        data: dict[str, Any] = {
            "model": model,
            "version": version,
            "event_id": event_id,
            "input_shape": list(inputs.shape),
            "latency_ms": round(latency_s * 1000, 3),
            "batch_size": batch_size,
            "time_ms": int(when * 1000),
        }
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
            data,
            subject=f"{model}/{version}",
            extensions={"partitionkey": model},
        )
        return to_kafka(event)

    def _drain(self) -> None:
        with self._drain_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        produced = 0
        while self._queue:
            try:
                entry = self._queue.popleft()
            except IndexError:
                break
            try:
                key, value, headers = self._event(entry)
                self._producer.produce(self.topic, value, key=key, headers=headers)
                produced += 1
            except Exception:
                log.exception("could not log a prediction of %s", entry[0])
        if produced:
            self._producer.flush()
            self.logged += produced

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception:
                log.exception("prediction log flush failed")

    def flush(self) -> None:
        """Produce everything queued so far and wait for the log's acknowledgement."""
        self._drain()
        self._producer.flush()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._drain()
        self._producer.close()
