"""No librdkafka client survives a fork.

A forked child inherits a client's memory but none of its threads: a produce there queues forever, a flush or
close waits forever, and destroying the handle joins threads that do not exist. So in the child every client
opened before the fork is marked as such (its methods raise a clear error) and its handle is kept, never
destroyed. Open new clients in the child.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from typing import Protocol


class Forkable(Protocol):
    def _forked(self) -> None:
        """Called in a forked child: refuse further use."""


_live: weakref.WeakSet[Forkable] = weakref.WeakSet()


def track(client: Forkable) -> None:
    """Mark ``client`` unusable in a child forked after this call."""
    _live.add(client)


def keep_forever(handle: object) -> None:
    """Never destroy ``handle`` in this process (its destructor would wait for threads the fork left out)."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(handle))


def _after_fork_in_child() -> None:
    for client in list(_live):
        client._forked()
    _live.clear()


FORKED = "was opened before this process forked; open a new one in this process"

os.register_at_fork(after_in_child=_after_fork_in_child)
