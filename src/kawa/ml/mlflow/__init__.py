"""The MLflow adapter: the only place Kawa talks to MLflow.

:mod:`kawa.ml.tracking` and :mod:`kawa.ml.registry` import it, never the reverse. ``mlflow`` itself is
imported inside the functions, so importing the adapter is cheap. MLflow errors become Kawa errors through
one table (:mod:`kawa.ml.mlflow.errors`). Settings reach MLflow explicitly (a client built with the
configured URIs); the adapter never reads or writes the process environment.

- :mod:`kawa.ml.mlflow.client` — a client for a configuration, experiments.
- :mod:`kawa.ml.mlflow.run` — the MLflow-backed tracked run.
- :mod:`kawa.ml.mlflow.models` — registering versions, reading versions and aliases, downloading files.
"""

from __future__ import annotations

from kawa.ml.mlflow.client import client, ensure_experiment
from kawa.ml.mlflow.errors import error_class, mlflow_errors

__all__ = ["client", "ensure_experiment", "error_class", "mlflow_errors"]
