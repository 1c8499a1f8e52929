"""Training as a Kawa job: submit ``kawa.apps.xray.train:train`` to the local scheduler, follow its log.

The same entry point runs from the command line::

    kawa jobs submit kawa.apps.xray.train:train --cpu 1 --param images=1200 --param promote=if-none
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.train import PROGRESS_PREFIX
from kawa.errors import JobError

if TYPE_CHECKING:
    from kawa.config import KawaConfig

ENTRYPOINT = "kawa.apps.xray.train:train"
_PROGRESS = re.compile(rf"^{PROGRESS_PREFIX} (\w+) (\d+)/(\d+)$")


def run_training_job(
    config: KawaConfig,
    settings: XraySettings,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    images: int | None = None,
    promote: str = "if-none",
    settings_file: str | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Submit the trainer, drive the scheduler until it ends, report progress from its log; returns the
    job's result (metrics, version, promoted). Raises :class:`JobError` with the log's tail if it failed."""
    from kawa.ml.jobs import JobSpec, JobState, Scheduler

    params: dict[str, Any] = {"promote": promote, "images": images or settings.train_images}
    if settings_file:
        params["settings_file"] = settings_file
    env = {"KAWA_LOG": config.log.uri, "KAWA_STORE": config.store.uri}
    spec = JobSpec.build(
        ENTRYPOINT, cpu=1, params=params, project="xray", timeout_s=timeout_s, env=env, name="xray-train"
    )
    scheduler = Scheduler(config)
    try:
        job = scheduler.submit(spec)
        log_path = scheduler.log_path(job.id)
        offset = 0
        while True:
            scheduler.tick()
            offset = _follow(log_path, offset, progress)
            current = scheduler.get(job.id)
            if current.state.finished:
                scheduler.wait(job.id, timeout=30)  # reap what this scheduler started
                _follow(log_path, offset, progress)
                break
            time.sleep(0.2)
        if current.state is not JobState.SUCCEEDED:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise JobError(
                f"training job {job.id} {current.state.value}: {current.error or ''}\n{tail}\n"
                f"see `kawa jobs logs {job.id}`; retrain with `kawa jobs submit {ENTRYPOINT}`"
            )
        result_file = scheduler.store.job_dir(job.id) / "result.json"
        result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {}
        result["job_id"] = job.id
        return result
    finally:
        scheduler.store.close()


def _follow(path: Path, offset: int, progress: Callable[[str, int, int], None] | None) -> int:
    """Report the progress lines written to ``path`` after ``offset``; returns the new offset."""
    if not path.exists():
        return offset
    with path.open("rb") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk.rfind(b"\n") + 1
    for line in chunk[:complete].decode(errors="replace").splitlines():
        match = _PROGRESS.match(line.strip())
        if match and progress is not None:
            progress(match.group(1), int(match.group(2)), int(match.group(3)))
    return offset + complete
