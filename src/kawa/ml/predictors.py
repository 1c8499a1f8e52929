"""Loaded, cached, hot-swapped models: what ``ctx.model("name@alias")`` and ``kawa serve-model`` use.

Guarantees of :class:`ModelManager`:

- A reference is loaded once and cached; ``get`` of the same reference returns the same handle.
- A handle of ``name@alias`` follows the alias: a background watcher notices a move (at once through the
  ``kawa.models`` topic when a log is given, and by polling the registry every ``poll_interval_s`` in any
  case), loads the new version *in the background* and swaps it in with one reference assignment. Calls
  that started on the old version finish on it; no call fails or waits for a load. A version that fails to
  load is not swapped in (the old one keeps serving, the watcher retries).
- Swap lag: between the alias move and the swap, calls still use the previous version — at most the time
  to notice (one poll interval, typically milliseconds with the topic) plus the load time.
- ``with manager.use(ref) as model:`` pins one version for a block (one event): every call inside it uses
  the same version even if a swap happens meanwhile. ``with pinned():`` (``manager.pinned()``) does the same for
  every handle used inside the block, so code that calls ``ctx.model(ref).predict`` repeatedly in one event
  never mixes versions.
- Every prediction is logged to the ``predictions`` topic (when a log is given) through a batched producer,
  linked to the event being handled: a function's runtime names it in
  :func:`kawa.functions.types.current_event`, so a handler does not pass ``event_id=`` by hand (it still
  may, to override it).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np

from kawa.functions.types import Allocation, current_event
from kawa.ml.loaders import LoadedModel, TensorSpec, load_model_dir
from kawa.ml.refs import ModelRef, parse_ref
from kawa.ml.runs import Lineage, lineage_from_tags

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.events.ref import EventRef
    from kawa.log.base import Consumer, EventLog
    from kawa.ml.prediction_log import PredictionLogger
    from kawa.ml.registry import Registry

log = logging.getLogger("kawa.ml.predictors")


_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


@contextmanager
def _yielding_gil(interval_s: float = 0.0005) -> Iterator[None]:
    """While a background load runs (pure-Python parsing, registry queries), hand the GIL back to serving
    threads every ``interval_s`` instead of every 5 ms, so a swap does not stall requests."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(interval_s, _switch_saved))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


class Predictor:
    """One loaded model version. ``predict`` is thread-safe and logs each call, linked to the current event.

    Satisfies :class:`kawa.functions.types.Predictor` (what ``ctx.model`` returns)."""

    def __init__(
        self,
        name: str,
        version: int,
        loaded: LoadedModel,
        logger: PredictionLogger | None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.ref = f"{name}/{version}"
        self.tags: dict[str, str] = dict(tags or {})  # the registered version's tags (e.g. what it was trained on)
        self.flavor = loaded.flavor
        self.input_spec: TensorSpec = loaded.input
        self.output_spec: TensorSpec = loaded.output
        self._predict = loaded.predict
        self._logger = logger

    @property
    def lineage(self) -> Lineage:
        """What this version was trained on (from its registry tags): data read, parent version, job."""
        return lineage_from_tags(self.name, self.version, None, self.tags)

    def __repr__(self) -> str:
        return f"<Predictor {self.name}/{self.version} ({self.flavor})>"

    def predict(
        self, inputs: Any, *, event: EventRef | None = None, event_id: str | None = None, input_ref: str | None = None
    ) -> np.ndarray:
        """``event``: the ref of the event this prediction serves, recorded with it (``event_id``: older form)."""
        x = np.asarray(inputs)
        if self.input_spec.dtype is not None and x.dtype != self.input_spec.dtype:
            x = x.astype(self.input_spec.dtype)
        start = time.perf_counter()
        out = self._predict(x)
        latency = time.perf_counter() - start
        if self._logger is not None:
            if event is None and event_id is None:
                event = current_event()
            self._logger.record(
                self.name, self.version, x, out, latency, event=event, event_id=event_id, input_ref=input_ref
            )
        return out

    def predict_batch(
        self,
        batch: Sequence[np.ndarray],
        event_ids: Sequence[str | None] | None = None,
        allocations: Sequence[Allocation | None] | None = None,
        *,
        events: Sequence[EventRef | None] | None = None,
    ) -> list[np.ndarray]:
        """One model call for several requests (rows concatenated along axis 0); outputs split back.
        ``allocations``: per request, the experiment allocation its record carries; ``events``: per request,
        the ref of the event it serves (``event_ids``: the older form)."""
        sizes = [len(x) for x in batch]
        joined = batch[0] if len(batch) == 1 else np.concatenate(batch, axis=0)
        start = time.perf_counter()
        out = self._predict(joined)
        latency = time.perf_counter() - start
        parts = np.split(out, np.cumsum(sizes)[:-1]) if len(batch) > 1 else [out]
        if self._logger is not None:
            ids = event_ids or [None] * len(batch)
            tags = allocations or [None] * len(batch)
            refs = events or [None] * len(batch)
            for x, y, event_id, allocation, ref in zip(batch, parts, ids, tags, refs, strict=True):
                self._logger.record(self.name, self.version, x, y, latency, event=ref, event_id=event_id,
                                    batch_size=len(batch), allocation=allocation)  # fmt: skip
        return parts


_pins: ContextVar[dict[str, Predictor] | None] = ContextVar("kawa_model_pins", default=None)


@contextmanager
def pinned() -> Iterator[None]:
    """Within this block (this thread or asyncio task), every handle keeps the version it first used.

    Wrap one event's processing in it and ``ctx.model(ref).predict(...)`` called several times never mixes
    versions, even when a swap happens in the middle. Blocks nest; the innermost wins.
    """
    token = _pins.set({})
    try:
        yield
    finally:
        _pins.reset(token)


class ModelHandle:
    """A live reference: the version its alias points to now (swapped atomically), or — inside
    :func:`pinned` — the version it first served in that block."""

    def __init__(self, ref: ModelRef, current: Predictor) -> None:
        self.ref = ref
        self._current = current
        self.swaps = 0
        self.last_swap_s: float | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.current().version

    def current(self) -> Predictor:
        """The version serving now (or pinned in this block); keep it to pin one version across calls."""
        pins = _pins.get()
        if pins is None:
            return self._current
        key = str(self.ref)
        predictor = pins.get(key)
        if predictor is None:
            predictor = pins[key] = self._current
        return predictor

    def predict(
        self, inputs: Any, *, event: EventRef | None = None, event_id: str | None = None, input_ref: str | None = None
    ) -> np.ndarray:
        return self.current().predict(inputs, event=event, event_id=event_id, input_ref=input_ref)

    def _swap(self, new: Predictor) -> None:
        self._current = new  # one reference assignment: atomic for readers
        self.swaps += 1
        self.last_swap_s = time.time()


class ModelManager:
    """Loads models from the registry, caches them and keeps alias references current."""

    def __init__(
        self, source: KawaConfig | Backends, log: EventLog | None = None, *, poll_interval_s: float = 1.0
    ) -> None:
        """``source``: a configuration, or backends whose log is used when ``log`` is not given. Without a
        log, predictions are not logged and alias moves are noticed by polling only."""
        from kawa.config import KawaConfig
        from kawa.ml.registry import Registry

        if isinstance(source, KawaConfig):
            self.config = source
        else:
            self.config = source.config
            log = log if log is not None else source.log
        self.log = log
        self.poll_interval_s = poll_interval_s
        self.registry: Registry = Registry(self.config, log, publish=False)
        self._logger: PredictionLogger | None = None
        self._handles: dict[str, ModelHandle] = {}
        self._loaded: dict[tuple[str, int], Predictor] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None

    # --- public API ----------------------------------------------------------------------------------

    def get(self, ref: str) -> ModelHandle:
        """The handle for ``ref`` (``name@alias`` or ``name/version``), loading it on first use."""
        parsed = parse_ref(ref)
        key = str(parsed)
        handle = self._handles.get(key)
        if handle is not None:
            return handle
        with self._lock:
            handle = self._handles.get(key)
            if handle is None:
                version = self.registry.resolve(parsed)
                handle = ModelHandle(parsed, self._load(parsed.name, version))
                self._handles[key] = handle
                if parsed.follows_alias:
                    self._ensure_watcher()
        return handle

    @contextmanager
    def use(self, ref: str) -> Iterator[Predictor]:
        """Pin the version ``ref`` points to now for the duration of the block (one event)."""
        yield self.get(ref).current()

    pinned = staticmethod(pinned)

    def refresh(self, names: set[str] | None = None) -> int:
        """Check alias targets now (of ``names``, or all) and swap in moved versions; returns swaps done."""
        swaps = 0
        for handle in list(self._handles.values()):
            ref = handle.ref
            if ref.alias is None or (names is not None and ref.name not in names):
                continue
            try:
                target = self.registry.alias_target(ref.name, ref.alias)
                if target is None or target == handle._current.version:
                    continue
                handle._swap(self._load(ref.name, target))
                swaps += 1
                log.info("%s now serves version %d (alias moved to it)", ref, target)
            except Exception:
                log.exception("could not follow %s; keeping version %d", ref, handle._current.version)
        if swaps:
            self._evict()
        return swaps

    def stats(self) -> dict[str, Any]:
        logger = self._logger
        return {
            "models": {k: {"version": h._current.version, "swaps": h.swaps} for k, h in self._handles.items()},
            "predictions_logged": logger.logged if logger else 0,
            "predictions_queued": logger.queued if logger else 0,
            "predictions_blocked": logger.blocked if logger else 0,
            "predictions_unencodable": logger.unencodable if logger else 0,
        }

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every prediction so far is on the log (:class:`~kawa.errors.ProducerError` if it did
        not acknowledge within ``timeout``)."""
        if self._logger is not None:
            self._logger.flush(timeout)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
        if self._logger is not None:
            self._logger.close()
            self._logger = None
        self.registry.close()

    def __enter__(self) -> ModelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- loading -------------------------------------------------------------------------------------

    def _prediction_logger(self) -> PredictionLogger | None:
        if self.log is None:
            return None
        if self._logger is None:
            from kawa.ml.prediction_log import PredictionLogger

            self._logger = PredictionLogger(self.log, self.config.ml.predictions_topic)
        return self._logger

    def _load(self, name: str, version: int) -> Predictor:
        cached = self._loaded.get((name, version))
        if cached is not None:
            return cached
        started = time.perf_counter()
        with _yielding_gil():
            path = self.registry.local_path(name, version)
            predictor = Predictor(
                name, version, load_model_dir(path), self._prediction_logger(), self._version_tags(name, version)
            )
        log.info(
            "loaded %s/%d (%s) in %.0f ms", name, version, predictor.flavor, (time.perf_counter() - started) * 1000
        )
        self._loaded[(name, version)] = predictor
        return predictor

    def _version_tags(self, name: str, version: int) -> dict[str, str]:
        try:
            return self.registry.version_tags(name, version)
        except Exception:  # tags are informative: a registry that cannot list them must not stop serving
            log.warning("could not read the tags of %s/%d", name, version, exc_info=True)
            return {}

    def _evict(self) -> None:
        with self._lock:
            live = {(h.name, h._current.version) for h in self._handles.values()}
            for key in list(self._loaded):
                if key not in live:
                    del self._loaded[key]  # in-flight calls keep their reference until they finish

    # --- watching ------------------------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="kawa-model-watcher", daemon=True)
            self._watcher.start()

    def _consumer(self) -> Consumer | None:
        if self.log is None:
            return None
        from kawa.log.base import TopicSpec

        topic = self.config.ml.models_topic
        try:
            self.log.create_topic(TopicSpec(topic), exist_ok=True)
            return self.log.consumer(f"kawa-model-watch-{uuid.uuid4().hex[:12]}", [topic], auto_offset_reset="latest")
        except Exception:
            log.exception("cannot follow %s; falling back to polling the registry", topic)
            return None

    def _watch(self) -> None:
        consumer = self._consumer()
        next_poll = time.monotonic() + self.poll_interval_s
        try:
            while not self._stop.is_set():
                names: set[str] | None = set()
                if consumer is not None:
                    try:
                        records = consumer.poll(timeout=min(self.poll_interval_s, 0.5), max_records=100)
                    except Exception:
                        log.exception("reading %s failed", self.config.ml.models_topic)
                        records = []
                        self._stop.wait(self.poll_interval_s)
                    names = {r.key.decode() for r in records if r.key}
                    if records and not names:
                        names = None
                else:
                    self._wake.wait(max(0.0, next_poll - time.monotonic()))
                    self._wake.clear()
                if time.monotonic() >= next_poll:
                    names, next_poll = None, time.monotonic() + self.poll_interval_s
                if names is None or names:
                    self.refresh(names)
        finally:
            if consumer is not None:
                consumer.close()
