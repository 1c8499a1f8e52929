"""Long-running commands take Ctrl-C and SIGTERM while they run and give the previous handlers back after, so a
command run in-process (the tests run ``kawa up``, ``kawa worker`` and routes that way) leaves Ctrl-C working."""

from __future__ import annotations

import os
import signal

from kawa.cli.signals import stop_on_signals


def test_signals_set_the_event_inside_and_the_old_handlers_come_back_after() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as stop:
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(10)  # the handler runs in the main thread at the next bytecode
    assert {sig: signal.getsignal(sig) for sig in before} == before
