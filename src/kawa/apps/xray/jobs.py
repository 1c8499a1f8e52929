"""Training as a Kawa job: submit ``kawa.apps.xray.train:train`` and follow its progress channel.

The same entry point runs from the command line::

    kawa jobs submit kawa.apps.xray.train:train --cpu 1 --param images=1200 --param promote=if-none
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kawa.apps.xray.settings import XraySettings
from kawa.errors import JobError

if TYPE_CHECKING:
    from kawa.config import KawaConfig

ENTRYPOINT = "kawa.apps.xray.train:train"


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
    """Submit the trainer, wait for it (``progress(stage, done, total)`` sees each progress record); returns
    the job's result (metrics, version, promoted). Raises :class:`JobError` with the log's tail if it failed."""
    from kawa.ml import jobs

    params: dict[str, Any] = {"promote": promote, "images": images or settings.train_images}
    if settings_file:
        params["settings_file"] = settings_file
    env = {"KAWA_LOG": config.log.uri, "KAWA_STORE": config.store.uri}
    job = jobs.submit(
        ENTRYPOINT, config=config, cpu=1, params=params, project="xray", timeout_s=timeout_s, env=env, name="xray-train"
    )
    report = None if progress is None else (lambda p: progress(p.message, p.done, p.total))
    finished = jobs.wait(job.id, config=config, on_progress=report)
    if finished.state is not jobs.JobState.SUCCEEDED:
        tail = jobs.log_tail(job.id, config=config, max_bytes=2000)
        raise JobError(
            f"training job {job.id} {finished.state.value}: {finished.error or ''}\n{tail}\n"
            f"see `kawa jobs logs {job.id}`; retrain with `kawa jobs submit {ENTRYPOINT}`"
        )
    result = jobs.result(job.id, config=config)
    result["job_id"] = job.id
    return result
