"""Ctrl-C and SIGTERM for long-running commands: they set an Event, and the previous handlers come back after."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["stop_on_signals"]


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An Event that SIGINT (Ctrl-C) or SIGTERM sets while the block runs. The handlers that were there before
    are restored after it, so a command run in-process (a test, a notebook) leaves Ctrl-C as it found it."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
