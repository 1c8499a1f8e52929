"""The durable job table: one SQLite file under the Kawa home, shared by every process on the machine.

Claiming queued jobs happens in one ``BEGIN IMMEDIATE`` transaction that also reads every active job's
allocation, so two schedulers (``kawa up`` and an inline ``kawa jobs submit --wait``) never hand out the
same GPU or overcommit the machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kawa.errors import JobError, JobNotFound
from kawa.ml.jobs.policy import Allocated, Placement, Waiting
from kawa.ml.jobs.spec import ACTIVE, JobSpec, JobState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    project TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    gpus TEXT NOT NULL DEFAULT '[]',
    pid INTEGER,
    owner_pid INTEGER,
    exit_code INTEGER,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""


@dataclass(frozen=True)
class Job:
    """A row of the job table."""

    id: str
    seq: int
    spec: JobSpec
    state: JobState
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    gpus: tuple[int, ...]
    pid: int | None
    owner_pid: int | None
    exit_code: int | None
    error: str | None
    cancel_requested: bool

    @property
    def project(self) -> str:
        return self.spec.project


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class JobStore:
    """Jobs in ``<home>/jobs/jobs.db``; each job's files (log, result) in ``<home>/jobs/<id>/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._db().executescript(_SCHEMA)  # executescript manages its own transaction
        except sqlite3.Error as exc:
            raise JobError(f"cannot open the job table in {self.root}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.root / "jobs.db", timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise JobError(f"job table {self.root / 'jobs.db'} failed: {exc}") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "output.log"

    # --- rows ----------------------------------------------------------------------------------------

    @staticmethod
    def _row(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            seq=row["seq"],
            spec=JobSpec.from_json(row["spec"]),
            state=JobState(row["state"]),
            submitted_at=row["submitted_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            gpus=tuple(json.loads(row["gpus"])),
            pid=row["pid"],
            owner_pid=row["owner_pid"],
            exit_code=row["exit_code"],
            error=row["error"],
            cancel_requested=bool(row["cancel_requested"]),
        )

    def add(self, spec: JobSpec) -> Job:
        job_id = "j-" + uuid.uuid4().hex[:10]
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, project, spec, state, submitted_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, spec.project, spec.to_json(), JobState.QUEUED.value, time.time()),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}; `kawa jobs list` shows the known jobs")
        return self._row(row)

    def jobs(self, states: set[JobState] | None = None, limit: int | None = None) -> list[Job]:
        sql, args = "SELECT * FROM jobs", []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args = [s.value for s in states]
        sql += " ORDER BY seq DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [self._row(r) for r in self._db().execute(sql, args).fetchall()]

    # --- scheduling ----------------------------------------------------------------------------------

    def claim(self, decide: Callable[[list[Waiting], list[Allocated]], list[Placement]]) -> list[Job]:
        """Atomically move the jobs ``decide`` places from queued to starting, owned by this process."""
        with self._tx(immediate=True) as db:
            rows = [
                self._row(r)
                for r in db.execute(
                    "SELECT * FROM jobs WHERE state IN (?, ?, ?) ORDER BY seq",
                    (JobState.QUEUED.value, JobState.STARTING.value, JobState.RUNNING.value),
                )
            ]
            queued = [
                Waiting(j.id, j.seq, j.project, j.spec.resources, j.submitted_at)
                for j in rows
                if j.state is JobState.QUEUED and not j.cancel_requested
            ]
            active = [Allocated(j.project, j.spec.resources, j.gpus) for j in rows if j.state in ACTIVE]
            placements = decide(queued, active) if queued else []
            for p in placements:
                db.execute(
                    "UPDATE jobs SET state = ?, gpus = ?, owner_pid = ?, started_at = ? WHERE id = ?",
                    (JobState.STARTING.value, json.dumps(list(p.gpus)), os.getpid(), time.time(), p.id),
                )
        return [self.get(p.id) for p in placements]

    def mark_running(self, job_id: str, pid: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = ?, pid = ? WHERE id = ?", (JobState.RUNNING.value, pid, job_id))

    def finish(self, job_id: str, state: JobState, exit_code: int | None = None, error: str | None = None) -> Job:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, exit_code = ?, error = ?, finished_at = ? WHERE id = ?",
                (state.value, exit_code, error, time.time(), job_id),
            )
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; flag an active one for its scheduler (which kills it)."""
        self.get(job_id)
        with self._tx(immediate=True) as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, error = 'cancelled before it started' "
                "WHERE id = ? AND state = ?",
                (JobState.CANCELLED.value, time.time(), job_id, JobState.QUEUED.value),
            )
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def reap_orphans(self) -> list[Job]:
        """Active jobs whose scheduler process died and whose own process is gone: marked failed."""
        lost = []
        for job in self.jobs({JobState.STARTING, JobState.RUNNING}):
            if job.owner_pid == os.getpid() or pid_alive(job.owner_pid) or pid_alive(job.pid):
                continue
            lost.append(self.finish(job.id, JobState.FAILED, None, "lost: its scheduler process ended while it ran"))
        return lost

    def close(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
