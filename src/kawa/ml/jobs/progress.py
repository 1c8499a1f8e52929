"""The progress channel of a job: structured records a job writes and the CLI, the portal and demos read.

Inside a job (a function the scheduler runs)::

    from kawa.ml import jobs

    for i, batch in enumerate(batches):
        ...
        jobs.progress(i + 1, len(batches), message="training")

Each call appends one JSON line to ``progress.jsonl`` in the job's folder (no log parsing anywhere).
Readers follow that file by offset; only complete lines are read, so a reader never sees half a record.
Outside a job, :func:`progress` writes nothing and returns False.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS_FILE = "progress.jsonl"


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of the step ``message`` names, at ``time`` (epoch seconds)."""

    done: int
    total: int
    message: str = ""
    time: float = 0.0

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total > 0 else None


class JobContext:
    """What a running job knows about itself: its id, its folder and its progress channel."""

    def __init__(self, job_id: str | None, job_dir: Path | None) -> None:
        self.job_id = job_id
        self.dir = job_dir

    def progress(self, done: int, total: int, message: str = "") -> bool:
        """Record progress; False (nothing written) when not running as a job."""
        if self.dir is None:
            return False
        record = Progress(int(done), int(total), str(message), time.time())
        with open(self.dir / PROGRESS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
        return True


def context() -> JobContext:
    """This process's job context (empty when it is not a job)."""
    from kawa.config import job_environment  # here: the job runner imports this package and must start fast

    env = job_environment()
    return JobContext(env.job_id, Path(env.job_dir) if env.job_dir else None)


def progress(done: int, total: int, message: str = "") -> bool:
    """Record this job's progress (``done`` of ``total``, and what it is doing); see :class:`JobContext`."""
    return context().progress(done, total, message)


class ProgressReader:
    """Reads a job's progress records incrementally (each record once, complete lines only)."""

    def __init__(self, job_dir: Path) -> None:
        self.path = Path(job_dir) / PROGRESS_FILE
        self.offset = 0

    def read(self) -> list[Progress]:
        """The records written since the last read."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        out = []
        for line in chunk[:complete].splitlines():
            try:
                data = json.loads(line)
                out.append(
                    Progress(
                        int(data["done"]),
                        int(data["total"]),
                        str(data.get("message", "")),
                        float(data.get("time", 0.0)),
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # a line some other writer left: not a progress record
        return out


def latest(job_dir: Path) -> Progress | None:
    """The last progress record of a job, or None."""
    records = ProgressReader(job_dir).read()
    return records[-1] if records else None
