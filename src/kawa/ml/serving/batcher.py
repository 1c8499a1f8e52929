"""Adaptive micro-batching: many requests, one model call.

Requests queue up; the batching task takes what is queued (up to ``max_batch`` rows) and calls the model
once, in a worker thread so the event loop keeps reading requests meanwhile. Adaptive: while requests keep
arriving the batch waits for more, up to ``max_wait_ms`` after its oldest request; when an event-loop turn
brings no new request it goes at once — so a lone request is not delayed by ``max_wait_ms``, and under load
batches grow by themselves (whatever arrived while the previous batch ran). The version is taken once per
batch, so a batch never mixes versions and a swap takes effect at the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kawa.functions.types import Allocation
from kawa.ml.predictors import Predictor


@dataclass
class _Item:
    x: np.ndarray
    request_id: str | None
    allocation: Allocation | None
    future: asyncio.Future[tuple[np.ndarray, Predictor]]
    at: float


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    rows: int = 0
    failed_batches: int = 0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "rows": self.rows,
            "failed_batches": self.failed_batches,
            "mean_batch_size": round(self.requests / self.batches, 3) if self.batches else 0.0,
            "max_batch_size": max(self.sizes, default=0),
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class MicroBatcher:
    """Bound to the running event loop on first :meth:`submit`."""

    def __init__(
        self,
        current: Callable[[], Predictor],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        idle_turns: int = 2,
    ) -> None:
        self._current = current
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_ms / 1000)
        self.idle_turns = idle_turns
        self.stats = BatchStats()
        self._queue: collections.deque[_Item] = collections.deque()
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kawa-predict")

    async def submit(
        self, x: np.ndarray, request_id: str | None = None, allocation: Allocation | None = None
    ) -> tuple[np.ndarray, Predictor]:
        """The model's output for ``x`` and the version (predictor) that computed it; ``allocation`` (an
        experiment's arm and propensity) goes into its prediction record."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = loop.create_task(self._run())
        future: asyncio.Future[tuple[np.ndarray, Predictor]] = loop.create_future()
        self._queue.append(_Item(x, request_id, allocation, future, time.monotonic()))
        assert self._ready is not None
        self._ready.set()
        return await future

    async def _gather(self) -> list[_Item]:
        deadline = self._queue[0].at + self.max_wait_s
        idle = 0
        while self._rows() < self.max_batch and time.monotonic() < deadline and idle < self.idle_turns:
            before = len(self._queue)
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._queue) == before else 0
        batch: list[_Item] = []
        rows = 0
        while self._queue and (not batch or rows + len(self._queue[0].x) <= self.max_batch):
            item = self._queue.popleft()
            if item.future.cancelled():
                continue
            batch.append(item)
            rows += len(item.x)
        return batch

    def _rows(self) -> int:
        return sum(len(item.x) for item in self._queue)

    async def _run(self) -> None:
        assert self._ready is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
            batch = await self._gather()
            if not batch:
                continue
            # Requests with different row shapes or dtypes cannot share one array: one call per group.
            groups: dict[tuple[Any, ...], list[_Item]] = {}
            for item in batch:
                groups.setdefault((item.x.shape[1:], item.x.dtype.str), []).append(item)
            model = self._current()  # one version for the whole batch
            for items in groups.values():
                xs = [i.x for i in items]
                ids = [i.request_id for i in items]
                allocations = [i.allocation for i in items]
                try:
                    outs = await loop.run_in_executor(self._executor, model.predict_batch, xs, ids, allocations)
                except Exception as exc:
                    self.stats.failed_batches += 1
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                self.stats.batches += 1
                self.stats.requests += len(items)
                self.stats.rows += sum(len(x) for x in xs)
                self.stats.sizes[len(items)] += 1
                for item, out in zip(items, outs, strict=True):
                    if not item.future.done():
                        item.future.set_result((out, model))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
