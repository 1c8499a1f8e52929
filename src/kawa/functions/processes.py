"""Process replicas: one function's replicas as child processes, scaled by the same KPA as threads.

A thread replica shares one interpreter (and its GIL) with every other; a process replica is a child
process (see :mod:`kawa.functions.process_main`) that joins the function's consumer group itself, so a
CPU-bound handler uses every core. The host keeps what decides: one control thread here samples the
children's concurrency (invocations running plus events read ahead), asks the :class:`~kawa.functions.
autoscaler.KPA` for a replica count and starts or retires children. A retired child drains (SIGTERM: its
in-flight events finish, are flushed, marked and committed) and leaves the group; the group hands its
partitions to the others. A child that dies (SIGKILL, out of memory) loses nothing: its uncommitted events
go to another member after its session times out, and the dedupe store, shared on disk, skips those it had
finished. With no child running, the group's lag is the demand, so the function scales from zero.

Which replicas a function gets (:func:`replica_mode`): ``HostOptions.replicas``, else ``functions.replicas``
in ``kawa.yaml`` (unless ``auto``), else the function's own ``replicas``. ``auto`` means processes for a sync
handler when the host can run them, threads otherwise (an ``async`` handler, an app that is not a module
attribute, an in-memory log or dedupe store, no configuration).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidFunction
from kawa.functions.autoscaler import KPA
from kawa.functions.metrics import FunctionMetrics
from kawa.functions.options import HostOptions
from kawa.functions.process_main import AppReference, ChildPlan, run_child

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.functions.app import App, FunctionSpec
    from kawa.functions.dedupe import DedupeStore
    from kawa.log.base import EventLog

log = logging.getLogger("kawa.functions.host")

__all__ = ["ProcessFunction", "app_reference", "replica_mode"]


def app_reference(app: App) -> AppReference | str:
    """Where a child process imports ``app`` from, or why it cannot."""
    modules = {spec.handler.__module__ for spec in app.functions.values()}
    for name in sorted(modules):
        module = sys.modules.get(name)
        if module is None:
            continue
        attrs = sorted(attr for attr, value in vars(module).items() if value is app)
        if not attrs:
            continue
        if name in ("__main__", "__mp_main__"):
            return (f"app {app.name!r} is defined in __main__, which a process replica cannot import; move it to "
                    "a module (kawa up --app module:app) or set replicas='thread'")
        return AppReference(name, attrs[0], getattr(module, "__file__", None))
    return (f"app {app.name!r} is not a module-level attribute, so a process replica cannot import it; define "
            "it at the top of a module (app = kawa.App(...)) or set replicas='thread'")


def replica_mode(
    spec: FunctionSpec,
    app: App,
    *,
    options: HostOptions,
    config: KawaConfig | None,
    log: EventLog,
    dedupe: DedupeStore | None,
) -> tuple[str, AppReference | None, KawaConfig | None]:
    """``("process", reference, child config)`` or ``("thread", None, None)`` for ``spec`` (module docstring).

    An explicit ``process`` the host cannot honour raises :class:`~kawa.errors.InvalidFunction` with why."""
    wanted: str = options.replicas or "auto"
    if wanted == "auto" and config is not None and config.functions.replicas != "auto":
        wanted = config.functions.replicas
    if wanted == "auto":
        wanted = spec.replicas
    if wanted == "thread":
        return "thread", None, None
    reference = app_reference(app)
    child_config, why = _child_config(config, log, dedupe)
    problem = reference if isinstance(reference, str) else why
    if wanted == "auto" and (spec.is_async or problem is not None):
        if problem is not None:
            logging.getLogger("kawa.functions.host").debug("%s runs thread replicas: %s", spec.qualified_name, problem)
        return "thread", None, None
    if problem is not None:
        raise InvalidFunction(f"function {spec.qualified_name} cannot run process replicas: {problem}")
    assert isinstance(reference, AppReference) and child_config is not None
    return "process", reference, child_config


def _child_config(
    config: KawaConfig | None, event_log: EventLog, dedupe: DedupeStore | None
) -> tuple[KawaConfig | None, str | None]:
    """The configuration a child opens its backbone from: the host's, naming the log the host runs on."""
    if config is None:
        return None, "the host has no configuration to hand its process replicas (pass config=...)"
    if dedupe is not None:
        return None, "the host was handed a dedupe store object; process replicas share the one functions.dedupe names"
    if config.functions.dedupe.startswith("memory:"):
        return None, "functions.dedupe is 'memory:', which processes cannot share; use 'sqlite:'"
    root = getattr(event_log, "root", None)
    uri = getattr(event_log, "uri", "")
    if root is not None:  # the embedded log: its directory, wherever the host's config says it is
        uri = str(root.resolve())
    elif not str(uri).startswith("kafka://"):
        return None, f"the event log {uri or type(event_log).__name__} lives in this process only; use embedded: or kafka://"
    return config.model_copy(update={"log": config.log.model_copy(update={"uri": uri})}), None


@dataclass(eq=False)
class _Child:
    serial: int
    process: BaseProcess
    conn: Connection
    started: float
    retiring: bool = False
    reported: bool = False
    open: bool = True
    in_flight: int = 0
    queued: int = 0
    assigned: int = 0
    user: dict[str, float] = field(default_factory=dict)


class ProcessFunction:
    """One function whose replicas are child processes (see the module docstring)."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        reference: AppReference,
        config: KawaConfig,
        log: EventLog,
        options: HostOptions,
        client_id: str | None = None,
    ) -> None:
        self.spec = spec
        self.reference = reference
        self.config = config
        self.log = log
        self.options = options
        self.client_id = client_id or f"kawa-fn-{spec.name}"
        self.kpa = KPA(spec.scaling_policy())
        # max_scale 0 means unlimited; processes are not threads, so "unlimited" stops at 2 per core.
        self._ceiling = spec.max_scale or 2 * (os.cpu_count() or 1)
        self.metrics = FunctionMetrics(spec.app, spec.name, spec.topic, spec.group)
        self.error: str | None = None
        self.grant: Callable[[int], int] = lambda want: want  # the project's replica quota (set by the host)
        self._mp = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._active: list[_Child] = []
        self._retiring: list[_Child] = []
        self._user_gone: dict[str, float] = {}  # handler metrics of children that exited
        self._serial = 0
        self._failures = 0
        self._hold_until = 0.0  # no new child before this (after children failed to start)
        self._next_lag = 0.0
        self._lag = 0
        self._drain_s = options.drain_timeout_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._control_loop, name=f"kawa-fn-{spec.name}-procs", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._scale_to(self.spec.scaling_policy().clamp(self.spec.initial_scale))
        self._thread.start()

    def begin_stop(self) -> None:
        self._stopping.set()

    def stop(self, timeout: float | None = None) -> None:
        """Drain every child (SIGTERM), wait for them to leave the group, kill those past the deadline."""
        self._drain_s = self.options.drain_timeout_s if timeout is None else timeout
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(self._drain_s + 15.0)

    def close(self) -> None:
        """Nothing to release: the children closed what they opened."""

    # --- reading ----------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The process ids of the running (not retiring) replicas."""
        with self._lock:
            return [c.process.pid for c in self._active if c.process.pid is not None]

    def assigned(self) -> list[int]:
        """Partitions held, per running replica (as each last reported)."""
        with self._lock:
            return [c.assigned for c in self._active]

    # --- the control thread -----------------------------------------------------------------------

    def _control_loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            self._receive(max(0.0, next_tick - time.monotonic()))
            self._reap()
            now = time.monotonic()
            if now >= next_tick:
                try:
                    self._tick(now)
                except Exception:
                    log.exception("%s: process replica control error", self.spec.qualified_name)
                next_tick = now + self.options.tick_s
        self._shutdown()

    def _children(self) -> list[_Child]:
        with self._lock:
            return [*self._active, *self._retiring]

    def _receive(self, timeout: float) -> None:
        children = self._children()
        waitables: list[Any] = [c.conn for c in children if c.open] + [c.process.sentinel for c in children]
        if not waitables:
            self._stopping.wait(timeout)
            return
        ready = wait(waitables, timeout)
        for child in children:
            if child.open and child.conn in ready:
                self._read(child)

    def _read(self, child: _Child) -> None:
        try:
            while child.open and child.conn.poll():
                self._handle(child, child.conn.recv())
        except (EOFError, OSError):
            child.open = False

    def _handle(self, child: _Child, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "failed":
            self.error = str(message.get("message"))
            log.error("%s: a process replica could not start: %s", self.spec.qualified_name, self.error)
            return
        self.metrics.absorb(message)
        with self._lock:
            child.in_flight, child.queued = int(message["in_flight"]), int(message["queued"])
            child.assigned, child.user = int(message["assigned"]), dict(message["user"])
            if not child.reported:
                child.reported = True
                self._failures = 0
        if message.get("error"):
            self.error = str(message["error"])
        if kind == "bye":
            child.open = False

    def _tick(self, now: float) -> None:
        with self._lock:
            demand = sum(c.in_flight + c.queued for c in self._active) + sum(c.in_flight for c in self._retiring)
        if not any(c.reported for c in self._active):
            demand = max(demand, self._backlog(now))  # nothing reads yet: the group's lag is the demand
        with self._lock:
            self.kpa.record(now, demand)
            before = len(self._active)
            decision = self.kpa.decide(now, before)
            self._scale_to(min(decision.desired, self._ceiling))
            if len(self._active) != before:
                self.metrics.scale_events += 1
                log.debug("%s: scale %d → %d processes", self.spec.qualified_name, before, len(self._active))
            m = self.metrics
            m.desired_replicas = min(decision.desired, self._ceiling)
            m.replicas, m.panicking = len(self._active), decision.panicking
            m.in_flight = sum(c.in_flight for c in self._active) + sum(c.in_flight for c in self._retiring)
            m.queued = sum(c.queued for c in self._active)
            users = [self._user_gone, *(c.user for c in self._active), *(c.user for c in self._retiring)]
        totals: dict[str, float] = {}
        for values in users:
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
        m.user.replace(totals)

    def _backlog(self, now: float) -> int:
        if now >= self._next_lag:
            self._next_lag = now + max(0.2, self.options.tick_s)
            try:
                self._lag = sum(row.lag for row in self.log.lag(self.spec.group, [self.spec.topic]))
            except Exception as exc:
                log.debug("%s: reading the group's lag failed: %s", self.spec.qualified_name, exc)
        return self._lag

    def _reap(self) -> None:
        """Forget children that exited; one that exited unasked is reported (its events come again)."""
        for child in self._children():
            if child.process.is_alive():
                continue
            self._read(child)  # its last words (the final report) may still be in the pipe
            child.process.join(0)
            with self._lock:
                if child in self._active:
                    self._active.remove(child)
                    code = child.process.exitcode
                    if not child.reported:
                        self._failures += 1
                        self._hold_until = time.monotonic() + min(30.0, 0.5 * 2 ** self._failures)
                    log.warning("%s: process replica %s (pid %s) exited with code %s; its uncommitted events "
                                "go to another replica", self.spec.qualified_name, child.serial, child.process.pid,
                                code)
                elif child in self._retiring:
                    self._retiring.remove(child)
                for name, value in child.user.items():
                    self._user_gone[name] = self._user_gone.get(name, 0.0) + value
            child.conn.close()
            child.open = False

    # --- scaling (under self._lock) ---------------------------------------------------------------

    def _scale_to(self, desired: int) -> None:
        desired = self.grant(desired)
        active = self._active
        if desired > len(active):
            if time.monotonic() < self._hold_until:
                return
            for _ in range(desired - len(active)):
                active.append(self._spawn())
        elif desired < len(active):
            # Retire the least busy first, newest first (as thread replicas do).
            order = sorted(range(len(active)), key=lambda i: (active[i].in_flight, -i))
            gone = set(order[: len(active) - desired])
            for i in gone:
                self._retire(active[i])
            self._active = [c for i, c in enumerate(active) if i not in gone]

    def _spawn(self) -> _Child:
        self._serial += 1
        plan = ChildPlan(
            reference=self.reference, function=self.spec.name, config=self.config, options=self.options,
            client_id=f"{self.client_id}-p{self._serial}", report_s=max(0.02, min(0.25, self.options.tick_s)),
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        ours, theirs = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=run_child, args=(theirs, plan), name=f"kawa-fn-{self.spec.name}-p{self._serial}", daemon=True
        )
        process.start()
        theirs.close()
        log.debug("%s: process replica %d started (pid %s)", self.spec.qualified_name, self._serial, process.pid)
        return _Child(self._serial, process, ours, time.monotonic())

    def _retire(self, child: _Child) -> None:
        child.retiring = True
        self._retiring.append(child)
        if child.process.is_alive():
            child.process.terminate()  # SIGTERM: the child drains and leaves the group

    def _shutdown(self) -> None:
        with self._lock:
            self._scale_to(0)
        deadline = time.monotonic() + self._drain_s + 10.0  # the children's drain, plus their start-up
        while self._children() and time.monotonic() < deadline:
            self._receive(0.05)
            self._reap()
        for child in self._children():
            log.warning("%s: process replica %s did not drain in time; killing it (its events come again)",
                        self.spec.qualified_name, child.serial)
            child.process.kill()
            child.process.join(5.0)
        self._reap()
        with self._lock:
            self.metrics.replicas = 0
            self.metrics.in_flight = self.metrics.queued = 0
        log.info("%s: process replicas stopped", self.spec.qualified_name)
