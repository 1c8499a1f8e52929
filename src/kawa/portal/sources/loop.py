"""The retraining loop as the portal sees it: the models with a policy or a history, and each model's timeline
(cached a few seconds), with the training job's latest progress while it runs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kawa.platform import Platform
    from kawa.retrain.timeline import Timeline

TTL_S = 2.0


class LoopSource:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._cache: dict[str, tuple[float, Timeline]] = {}

    def models(self) -> list[str]:
        from kawa.retrain.controller import models

        configured = {str(p.get("model")) for p in self.platform.config.loop.policies if p.get("model")}
        return sorted(configured | set(models(self.platform.log)))

    def timeline(self, model: str) -> Timeline:
        cached = self._cache.get(model)
        if cached is not None and time.monotonic() - cached[0] < TTL_S:
            return cached[1]
        from kawa.retrain.controller import history
        from kawa.retrain.timeline import timeline

        result = timeline(model, history(self.platform.log, model))
        self._cache[model] = (time.monotonic(), result)
        return result

    def progress(self, job_name: str) -> dict[str, Any] | None:
        """The latest progress record of the loop's training job (None when it has none, or jobs are absent)."""
        try:
            from kawa.ml import jobs
        except ImportError:
            return None
        job = jobs.find(job_name, config=self.platform.config)
        if job is None:
            return None
        p = jobs.last_progress(job.id, config=self.platform.config)
        out: dict[str, Any] = {"job": job.id, "state": str(job.state)}
        if p is not None:
            out.update(message=p.message, done=p.done, total=p.total)
        return out
