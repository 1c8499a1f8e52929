"""The body of a process replica: a child process that runs one function's consumer-group runner.

The host starts it with the ``spawn`` context (never ``fork``: librdkafka and the host's threads do not
survive a fork, see :mod:`kawa.log.kafka.forks`). The child imports the app by its reference, opens the
backbone from the configuration it was handed (:func:`kawa.backends.open_backends`), joins the function's
consumer group and runs the same :class:`~kawa.functions.runner.FunctionRunner` a thread replica runs, with
one replica of ``concurrency`` slots. Every ``report_s`` it sends its metrics (deltas) up the pipe.

Stop: SIGTERM, or the host's end of the pipe closing (the host is gone), drains the runner (in-flight events
finish, their records are flushed, they are marked done and committed) and the child leaves the group.
SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group, and the host decides the drain.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from kawa.errors import AppLoadError, KawaError
from kawa.functions.options import HostOptions

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.functions.app import App, FunctionSpec

log = logging.getLogger("kawa.functions.host")


@dataclass(frozen=True)
class AppReference:
    """Where a child finds the app: ``module:attr``, or the file the module was loaded from."""

    module: str
    attr: str
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


@dataclass(frozen=True)
class ChildPlan:
    """What a process replica is handed (pickled by the ``spawn`` context)."""

    reference: AppReference
    function: str
    config: KawaConfig
    options: HostOptions
    client_id: str
    report_s: float
    log_level: int = logging.WARNING  # the host's: a child logs to its inherited stderr at the same level


def load_referenced(reference: AppReference) -> App:
    """The app ``reference`` names, imported in this process."""
    from kawa.functions.app import App, load_app

    try:
        module = importlib.import_module(reference.module)
    except ImportError:
        if reference.file is None:
            raise AppLoadError(
                f"a process replica cannot import {reference.module!r} for app {reference}; install it or run "
                "from the directory that holds it (or set replicas='thread')"
            ) from None
        return load_app(f"{reference.file}:{reference.attr}")
    app = getattr(module, reference.attr, None)
    if not isinstance(app, App):
        raise AppLoadError(f"{reference} is {type(app).__name__} in a process replica, not a kawa.App")
    return app


def run_child(conn: Connection, plan: ChildPlan) -> None:
    """The child's main function (see the module docstring)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=plan.log_level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    try:
        runner, closers = _start(plan)
    except Exception as exc:
        what = str(exc) if isinstance(exc, KawaError) else f"{type(exc).__name__}: {exc}"
        _send(conn, {"kind": "failed", "message": what})
        conn.close()
        raise SystemExit(1) from None
    try:
        while not stop.is_set():
            if conn.poll(plan.report_s):
                try:
                    conn.recv()  # the host sends nothing; a readable pipe means it went away
                except EOFError:
                    break
            if not _send(conn, _report(runner, "report")):
                break
    finally:
        runner.stop()
        _send(conn, _report(runner, "bye"))
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("closing a process replica's resources failed")
        conn.close()


def _start(plan: ChildPlan) -> tuple[Any, list[Any]]:
    from kawa.backends import open_backends
    from kawa.functions.context import Runtime
    from kawa.functions.dedupe import open_dedupe
    from kawa.functions.metrics import ReportingMetrics
    from kawa.functions.runner import FunctionRunner

    app = load_referenced(plan.reference)
    spec: FunctionSpec = app.get(plan.function)
    spec = dataclasses.replace(spec, min_scale=1, max_scale=1, initial_scale=1)  # this process is one replica
    backends = open_backends(plan.config)
    closers: list[Any] = [backends.close]
    try:
        dedupe = open_dedupe(plan.config.functions.dedupe, plan.config)
        closers.insert(0, dedupe.close)
        runtime = Runtime(
            spec, config=plan.config, log=backends.log, dedupe=dedupe, store_factory=lambda: backends.store,
            metrics=ReportingMetrics(spec.app, spec.name, spec.topic, spec.group), app_config=app.config,
        )
        closers.insert(0, runtime.close)
        consumer = backends.log.consumer(
            spec.group, [spec.topic], auto_offset_reset=spec.initial_offset,
            session_timeout_ms=plan.options.session_timeout_ms, client_id=plan.client_id,
        )
        runner = FunctionRunner(runtime, consumer, plan.options)
        runner.start()
    except BaseException:
        for close in closers:
            close()
        raise
    return runner, closers


def _report(runner: Any, kind: str) -> dict[str, Any]:
    report: dict[str, Any] = runner.metrics.report()
    report["kind"] = kind
    report["assigned"] = len(runner.assignment)
    error = runner.error
    report["error"] = None if error is None else str(error)
    return report


def _send(conn: Connection, message: dict[str, Any]) -> bool:
    try:
        conn.send(message)
    except (OSError, ValueError):  # the host is gone (broken pipe) or the pipe is closed
        return False
    return True
