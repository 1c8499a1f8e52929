"""A demo's feeder after Ctrl-C: every item it sends is recorded before the demo counts (kawa.apps.demo.Background)."""

from __future__ import annotations

import os
import signal
import threading

from kawa.apps.demo import Background


def test_ctrl_c_while_waiting_still_waits_for_the_feeders_last_item() -> None:
    """On CPython 3.11 a ``Thread.join`` that Ctrl-C interrupts marks the thread stopped while it runs, and a
    later join returns at once; the demo then counted before its last upload. ``finish`` must really wait."""
    sent: list[int] = []
    finishing, last_put = threading.Event(), threading.Event()

    def feeder(stop: threading.Event) -> None:
        stop.wait()
        last_put.wait()  # the last put, still under way when stop is set: it ends once finish() was called
        sent.append(len(sent))

    background = Background(feeder, "test-feeder").start()
    threading.Thread(target=lambda: (finishing.wait(), last_put.set()), daemon=True).start()
    # Ctrl-C as Python's default handler answers it, whatever an earlier test in this process installed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = False
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        for _ in range(120):  # a lost signal fails the test after two minutes instead of hanging it
            if not background.running(timeout=1.0):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted
    finishing.set()
    assert background.finish() is True
    assert sent == [0]  # recorded before finish returned


def test_finish_with_a_timeout_says_whether_the_feeder_ended() -> None:
    release = threading.Event()
    background = Background(lambda stop: release.wait(30), "test-slow").start()
    assert background.running(timeout=0.05)
    assert background.finish(timeout=0.05) is False  # it ignores stop until released
    release.set()
    assert background.finish(timeout=30) is True and not background.running(timeout=0)
