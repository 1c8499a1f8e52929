"""The model-lifecycle fixtures (a session MLflow sqlite store, KAWA_* variables for job subprocesses)."""

from tests.ml.conftest import _tracking_db, config, ml_env, tracking_dir  # noqa: F401
