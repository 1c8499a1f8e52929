"""Experiments as the portal sees them: the log's experiments topic and, per experiment, its status from the
decision records (units per arm and the sample-ratio check), cached for a few seconds."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.evaluation.experiments import ExperimentState, ExperimentStore
    from kawa.evaluation.status import ExperimentStatus
    from kawa.platform import Platform

STATUS_TTL_S = 2.0


class ExperimentsSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._store: ExperimentStore | None = None
        self._lock = threading.Lock()
        self._status: dict[str, tuple[float, ExperimentStatus]] = {}

    @property
    def store(self) -> ExperimentStore:
        with self._lock:
            if self._store is None:
                from kawa.evaluation.experiments import ExperimentStore

                self._store = ExperimentStore(self.platform.log)
            return self._store

    def list(self) -> list[ExperimentState]:
        return self.store.list()

    def status(self, name: str) -> ExperimentStatus:
        """Reads every decision record on the predictions topic (at most every STATUS_TTL_S per experiment)."""
        cached = self._status.get(name)
        if cached is not None and time.monotonic() - cached[0] < STATUS_TTL_S:
            return cached[1]
        from kawa.evaluation.status import read_status

        status = read_status(self.platform.log, self.store.get(name), self.platform.config.ml.predictions_topic)
        self._status[name] = (time.monotonic(), status)
        return status

    def create(self, spec: dict[str, Any], *, shadow: bool = False) -> ExperimentState:
        from kawa.evaluation.spec import ExperimentSpec

        return self.store.create(ExperimentSpec.from_dict(spec), shadow=shadow)

    def stop(self, name: str, reason: str) -> ExperimentState:
        state = self.store.stop(name, reason)
        self._status.pop(name, None)
        return state
