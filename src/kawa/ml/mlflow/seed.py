"""A fresh embedded MLflow database from a migrated template, instead of running MLflow's migrations again.

MLflow creates a new sqlite database by running its whole alembic history (about 5 s on an idle 2-core machine,
tens of seconds on a busy one). The result depends only on the MLflow version, so Kawa migrates once per version
into ``~/.cache/kawa/mlflow-schema-<version>.db`` and copies that file for every new home. The copy's ``Default``
experiment keeps its artifacts under the home (MLflow would put them under the first process's working
directory). A database that already exists is never touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

log = logging.getLogger("kawa.ml.mlflow.seed")

__all__ = ["seed_sqlite", "template_path"]


def template_path() -> Path:
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kawa"
    return cache / f"mlflow-schema-{mlflow.__version__}.db"


def _build_template(path: Path) -> None:
    from mlflow import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        uri = f"sqlite:///{tmp}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments()  # runs the migrations
        client.search_registered_models()
        os.replace(tmp, path)  # atomic: a reader sees no template or a whole one
    finally:
        tmp.unlink(missing_ok=True)


def seed_sqlite(db: Path, default_artifacts: str | None) -> bool:
    """Create ``db`` as a copy of the migrated template (built first if missing). False, changing nothing, when
    ``db`` exists; any failure leaves ``db`` absent, and MLflow then creates it the slow way."""
    if db.exists():
        return False
    try:
        template = template_path()
        if not template.exists():
            _build_template(template)
        db.parent.mkdir(parents=True, exist_ok=True)
        tmp = db.with_name(f".{db.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            shutil.copyfile(template, tmp)
            if default_artifacts:
                with sqlite3.connect(tmp) as con:
                    con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                                (f"{default_artifacts.rstrip('/')}/0",))  # fmt: skip
                con.close()
            os.link(tmp, db)  # fails if another process seeded it first: theirs stands
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
    except Exception:
        log.warning("could not copy MLflow's migrated schema; MLflow will create %s itself", db.name, exc_info=True)
        return False
    return True
