"""Replicas: the unit the autoscaler adds and removes inside one host process.

A replica runs up to ``concurrency`` invocations at once: a sync handler gets ``concurrency`` worker
threads, an ``async`` handler one thread with an event loop running up to ``concurrency`` tasks. A replica
asks its :class:`Dispatcher` for work and hands each outcome back to it; when it finishes an invocation
the dispatcher may give it the next event at once, so a busy replica never waits on the poll loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine
from typing import Any, Protocol


class Dispatcher(Protocol):
    """Hands out units of work (one event, or a batch of them) and takes their outcomes back."""

    def execute(self, job: Any) -> Any: ...

    def aexecute(self, job: Any) -> Coroutine[Any, Any, Any]: ...

    def finish(self, job: Any, outcome: Any, replica: Replica) -> Any | None:
        """Record ``outcome``; return the next unit for ``replica`` (counted in flight) or None."""
        ...


class Replica:
    """One replica of a sync handler: ``concurrency`` threads."""

    def __init__(self, dispatcher: Dispatcher, name: str, concurrency: int) -> None:
        self.dispatcher = dispatcher
        self.name = name
        self.concurrency = concurrency
        self.in_flight = 0  # guarded by the dispatcher's lock
        self.retiring = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, job: Any) -> None:
        """Run ``job`` (the dispatcher already counted it in flight)."""
        self._queue.put(job)

    def retire(self) -> None:
        """Stop after the invocations in flight; called once, under the dispatcher's lock."""
        self.retiring = True
        for _ in self._threads:
            self._queue.put(None)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        dispatcher = self.dispatcher
        while True:
            job = self._queue.get()
            if job is None:
                return
            while job is not None:
                outcome = dispatcher.execute(job)
                job = dispatcher.finish(job, outcome, self)


class AsyncReplica(Replica):
    """One replica of an ``async`` handler: an event loop thread running up to ``concurrency`` tasks."""

    def __init__(self, dispatcher: Dispatcher, name: str, concurrency: int) -> None:
        super().__init__(dispatcher, name, concurrency)
        self._loop = asyncio.new_event_loop()
        self._threads = [threading.Thread(target=self._run_loop, name=name, daemon=True)]
        self._tasks: set[asyncio.Task[None]] = set()
        self._chains = 0  # touched only on the loop thread

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def submit(self, job: Any) -> None:
        self._loop.call_soon_threadsafe(self._spawn, job)

    def _spawn(self, job: Any) -> None:
        self._chains += 1
        task = self._loop.create_task(self._chain(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _chain(self, job: Any) -> None:
        dispatcher = self.dispatcher
        try:
            while job is not None:
                outcome = await dispatcher.aexecute(job)
                job = dispatcher.finish(job, outcome, self)
        finally:
            self._chains -= 1
            if self.retiring and self._chains == 0:
                self._loop.stop()

    def retire(self) -> None:
        self.retiring = True
        if self.in_flight == 0:
            self._loop.call_soon_threadsafe(self._stop_if_idle)

    def _stop_if_idle(self) -> None:
        if self._chains == 0:
            self._loop.stop()


def make_replica(dispatcher: Dispatcher, name: str, concurrency: int, is_async: bool) -> Replica:
    cls = AsyncReplica if is_async else Replica
    replica = cls(dispatcher, name, concurrency)
    replica.start()
    return replica
