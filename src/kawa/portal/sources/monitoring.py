"""Monitoring as the portal sees it: the events the monitoring service writes on ``kawa.monitor.alerts`` (alerts,
resolutions, window drift tables, matured performance), read a few seconds at a time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kawa.monitor.status import MonitorEvent
    from kawa.platform import Platform

TTL_S = 2.0


class MonitoringSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._cache: tuple[float, list[MonitorEvent]] | None = None

    def events(self) -> list[MonitorEvent]:
        if self._cache is not None and time.monotonic() - self._cache[0] < TTL_S:
            return self._cache[1]
        from kawa.monitor.status import read_events

        events = read_events(self.platform.log)
        self._cache = (time.monotonic(), events)
        return events

    def models(self) -> list[str]:
        return sorted({e.model for e in self.events()})

    def of(self, model: str) -> list[MonitorEvent]:
        return [e for e in self.events() if e.model == model]
