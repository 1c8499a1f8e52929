"""``kawa up``'s log maintenance: retention and compaction of the embedded log in the background."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kawa.log.embedded import EmbeddedLog
    from kawa.platform import Platform

log = logging.getLogger("kawa.log.maintenance")


class LogMaintenance:
    """Runs ``EmbeddedLog.maintain()`` every ``interval_s`` (Kafka brokers do this themselves)."""

    name = "log-maintenance"

    def __init__(self, log_: EmbeddedLog, interval_s: float = 30.0) -> None:
        self._log = log_
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kawa-log-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._log.maintain()
            except Exception:
                log.exception("log maintenance failed; retrying in %.0f s", self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def build_service(platform: Platform) -> LogMaintenance | None:
    from kawa.log.embedded import EmbeddedLog

    if isinstance(platform.log, EmbeddedLog):
        return LogMaintenance(platform.log)
    return None
