"""librdkafka's logs and error callbacks, routed to Python logging through one rate limiter per cluster.

With a broker down, every librdkafka client logs ``Connect to … failed`` and calls ``error_cb`` each time
it retries: many lines a second that hide everything else. :class:`ClusterHealth` turns them into a few
lines of Kawa's own:

- the first sign of an unreachable cluster: one warning that says what is down and what to do;
- while it stays down: at most one summary per ``summary_s`` with how long and how many errors;
- when a client gets an answer again (:meth:`ClusterHealth.reachable`): one line that it is back.

Other repeated librdkafka lines (``Failed to acquire idempotence PID … retrying``) pass the first time, then
at most once per ``summary_s`` per client and kind, with a count. Debug lines (``log.kafka.extra.debug``)
pass unchanged: whoever asked for them wants them all.

Nothing here holds a reference to a client: a client's callbacks may run while it is being collected.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError

log = logging.getLogger("kawa.log.kafka")
_raw = logging.getLogger("kawa.log.kafka.librdkafka")

SUMMARY_S = 30.0
# error_cb codes that mean "the cluster cannot be reached" (not: a request failed).
_DOWN_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})
# librdkafka log facilities of a broker connection failing (``FAIL``) or the cluster being unreachable.
_DOWN_FACILITIES = frozenset({"FAIL", "ERROR"})
_PREFIX = re.compile(r"^(\[thrd:[^\]]*\]: )?([^\s:]+:\d+/[\w-]+: )?")
_DOWN_WORDS = ("connect to", "connection refused", "brokers are down", "disconnected", "resolve", "timed out")


@dataclass
class _Repeat:
    first_at: float
    reported_at: float
    count: int = 0  # occurrences since the last line
    last: str = ""


class RdkafkaLogger:
    """What confluent-kafka's ``logger`` setting calls: ``log(level, "%s [%s] %s", fac, client, message)``."""

    def __init__(self, health: ClusterHealth) -> None:
        self._health = health

    def log(self, level: int, msg: str, *args: object) -> None:
        if len(args) == 3:
            fac, client, message = (str(a) for a in args)
            self._health.on_log(level, fac, client, message)
        else:  # not the shape confluent-kafka uses; pass it on
            _raw.log(level, msg, *args)


class ClusterHealth:
    """The reachability of one Kafka cluster as its clients see it, said in few lines (thread-safe)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        summary_s: float = SUMMARY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.summary_s = summary_s
        self._clock = clock
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        #: librdkafka log lines and error callbacks received, whether or not they were logged.
        self.events = 0
        self.down_since: float | None = None
        self._last_down_at = 0.0
        self._down_clients: set[str] = set()
        self._down_errors = 0
        self._summary_at = 0.0
        self._repeats: dict[tuple[str, str], _Repeat] = {}
        self.logger = RdkafkaLogger(self)

    def client_name(self, kind: str) -> str:
        """A name for a client in Kawa's lines (``producer-3``)."""
        return f"{kind}-{next(self._names)}"

    def error_callback(self, client: str) -> Callable[[KafkaError], None]:
        """An ``error_cb`` for one client; it refers to nothing but this object."""

        def on_error(error: KafkaError) -> None:
            self.on_error(client, error)

        return on_error

    # --- what librdkafka reports --------------------------------------------------------------------

    def on_error(self, client: str, error: KafkaError) -> None:
        if error.code() in _DOWN_CODES and not error.fatal():
            self._down(client, error.str())
            return
        with self._lock:
            self.events += 1
        if error.fatal():
            log.error("Kafka %s at %s failed for good: %s; recreate the client", client, self.bootstrap, error.str())
        else:
            self._repeat(logging.WARNING, client, f"error {error.name()}", f"Kafka {client}: {error.str()}")

    def on_log(self, level: int, fac: str, client: str, message: str) -> None:
        if level <= logging.DEBUG:
            with self._lock:
                self.events += 1
            _raw.debug("%s [%s] %s", fac, client, message)
        elif fac in _DOWN_FACILITIES and any(word in message.lower() for word in _DOWN_WORDS):
            self._down(client, message)
        else:
            with self._lock:
                self.events += 1
            self._repeat(level, client, fac, f"librdkafka {fac} [{client}] {message}")

    # --- what Kawa says -----------------------------------------------------------------------------

    def _down(self, client: str, detail: str) -> None:
        now = self._clock()
        with self._lock:
            self.events += 1
            # A client retries at least every reconnect.backoff.max.ms (5 s): silence for a whole summary
            # period means the last outage ended unnoticed, and this is a new one.
            fresh = self.down_since is None or now - self._last_down_at > self.summary_s
            self._last_down_at = now
            self._down_clients.add(client)
            if fresh:
                self.down_since = self._summary_at = now
                self._down_clients = {client}
                self._down_errors = 0
            else:
                self._down_errors += 1
                if now - self._summary_at < self.summary_s:
                    return
                self._summary_at = now
                errors, self._down_errors = self._down_errors, 0
                clients, since = len(self._down_clients), now - (self.down_since or now)
        _raw.debug("[%s] %s", client, detail)
        if fresh:
            log.warning(
                "Kafka at %s is not reachable (%s); producers keep records queued for up to "
                "message.timeout.ms (30 s by default) and consumers wait; start the broker or fix log.uri",
                self.bootstrap,
                _short(detail),
            )
        else:
            log.warning(
                "Kafka at %s is still not reachable after %.0f s (%d connection errors from %d client(s) since "
                "the last report); start the broker or fix log.uri",
                self.bootstrap,
                since,
                errors,
                clients,
            )

    def reachable(self) -> None:
        """A client got an answer from the cluster: say it is back if it was down. Cheap when it was not."""
        if self.down_since is None:
            return
        now = self._clock()
        with self._lock:
            if self.down_since is None:
                return
            down_for, self.down_since = now - self.down_since, None
            self._down_clients.clear()
            self._down_errors = 0
        log.warning("Kafka at %s is reachable again (it was not for %.0f s)", self.bootstrap, down_for)

    def _repeat(self, level: int, client: str, kind: str, line: str) -> None:
        now = self._clock()
        with self._lock:
            seen = self._repeats.get((client, kind))
            if seen is None:
                if len(self._repeats) > 1000:  # clients come and go: forget the old ones
                    self._repeats.clear()
                self._repeats[(client, kind)] = _Repeat(now, now)
                count = 0
            else:
                seen.count += 1
                seen.last = line
                if now - seen.reported_at < self.summary_s:
                    return
                count, seen.count, seen.reported_at = seen.count, 0, now
        if count:
            log.log(level, "%s (%d times in the last %.0f s)", line, count, self.summary_s)
        else:
            log.log(level, "%s", line)


def _short(detail: str, limit: int = 160) -> str:
    """librdkafka's line without its thread and broker prefixes (``[thrd:…]: host:port/bootstrap: ``)."""
    detail = _PREFIX.sub("", detail)
    return detail if len(detail) <= limit else detail[: limit - 1] + "…"
