"""The sampler behind the live views: one background thread that samples the platform on a fixed tick
(topic sizes → rates, function metrics → history, the boards of the installed apps) so that any number of browsers
watching over server-sent events cost one sample per tick, not one per browser.

When nobody has watched for a while the tick slows down five-fold (rates stay meaningful; the machine
stays quiet).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kawa.errors import KawaError

if TYPE_CHECKING:
    from kawa.log.base import TopicInfo
    from kawa.portal.runtime import Portal

log = logging.getLogger("kawa.portal.live")

HISTORY_POINTS = 600
IDLE_AFTER_S = 30.0
IDLE_FACTOR = 5


@dataclass(frozen=True)
class FunctionPoint:
    t: float
    replicas: int
    desired_replicas: int
    in_flight: int
    rate_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    end_to_end_p99_ms: float | None


class Sampler:
    """Samples ``portal`` every ``interval_s`` seconds in a daemon thread."""

    def __init__(self, portal: Portal, interval_s: float = 1.0) -> None:
        self.portal = portal
        self.interval_s = interval_s
        self.version = 0
        self.topics: list[TopicInfo] = []
        self.function_history: dict[str, deque[FunctionPoint]] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._tick_lock = threading.Lock()  # one tick at a time (tests call tick() beside the thread)
        self._thread: threading.Thread | None = None
        self._watched_at = time.monotonic()
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kawa-portal-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def watched(self) -> None:
        """Called by live views: keep the fast tick."""
        self._watched_at = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.tick(fresh=False)
            idle = time.monotonic() - self._watched_at > IDLE_AFTER_S
            interval = self.interval_s * (IDLE_FACTOR if idle else 1)
            # Sleep in short steps so a new watcher gets the fast tick within one interval.
            deadline = started + interval
            while not self._stop.is_set() and time.monotonic() < deadline:
                if idle and time.monotonic() - self._watched_at < IDLE_AFTER_S:
                    break
                self._stop.wait(min(self.interval_s, max(0.0, deadline - time.monotonic())))

    def tick(self, fresh: bool = True) -> None:
        """Take one sample now: after it returns, the board shows what was stored before it was called
        (tests call this directly). The thread's own ticks pass ``fresh=False``: bucket listings are then
        re-taken only when due."""
        with self._tick_lock:
            self._tick(fresh)

    def _tick(self, fresh: bool) -> None:
        try:
            self.topics = self.portal.log.sample()
        except KawaError as exc:
            self.last_error = str(exc)
        self._sample_functions()
        try:
            self.portal.boards.refresh(fresh)
        except KawaError as exc:
            self.last_error = str(exc)
        except Exception:  # a bug in one board must not stop the live views
            log.exception("refreshing the app boards failed")
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def _sample_functions(self) -> None:
        try:
            views = self.portal.functions.functions()
        except KawaError:
            return
        now = time.time()
        for view in views:
            s = view.stats
            history = self.function_history.setdefault(view.name, deque(maxlen=HISTORY_POINTS))
            history.append(
                FunctionPoint(
                    now,
                    s.replicas,
                    s.desired_replicas,
                    s.in_flight,
                    s.rate_per_s,
                    s.latency_p50_ms,
                    s.latency_p99_ms,
                    s.end_to_end_p99_ms,
                )
            )

    def history(self, function: str, since: float = 0.0) -> list[dict[str, Any]]:
        points = list(self.function_history.get(function, ()))
        return [asdict(p) for p in points if p.t >= since]

    def wait_for_change(self, seen: int, timeout: float) -> int:
        """Block until the version moves past ``seen`` (or ``timeout``); returns the current version."""
        with self._changed:
            if self.version == seen and not self._stop.is_set():
                self._changed.wait(timeout)
            return self.version
