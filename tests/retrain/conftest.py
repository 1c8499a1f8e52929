"""The model-lifecycle fixtures (a session MLflow sqlite store, KAWA_* variables for job subprocesses), and the
loop's world: a champion in the registry, an embedded log, a trainer module the jobs import."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from kawa.config import KawaConfig
from kawa.log import open_log
from kawa.log.base import TopicSpec
from kawa.ml.registry import Registry
from kawa.ml.trainers import logistic_regression
from kawa.monitor.records import DECISIONS_TOPIC, OUTCOMES_TOPIC
from kawa.retrain.controller import ALERTS_TOPIC
from tests.ml.conftest import _tracking_db, config, ml_env, tracking_dir  # noqa: F401

TRAINER = textwrap.dedent('''
    from kawa.ml.trainers import logistic_regression

    def train(model, quality="better", **lineage):
        """A retraining job: registers a new version and reports its holdout metric against the champion's."""
        result = logistic_regression(model, n=120, seed=7)
        return {"version": result["version"], "candidate_metric": 0.90 if quality == "better" else 0.60,
                "champion_metric": 0.80}
''')


@pytest.fixture
def world(config: KawaConfig, tmp_path: Path) -> Any:  # noqa: F811 (config: the imported fixture)
    (tmp_path / "looptrainer.py").write_text(TRAINER)  # the jobs run in the test's directory
    model = f"loop-{os.urandom(4).hex()}"
    champion = logistic_regression(model, n=120, seed=1)["version"]
    log = open_log(f"embedded:{tmp_path / 'log'}", config)
    registry = Registry(config, log)
    registry.promote(model, champion)
    for topic in (DECISIONS_TOPIC, OUTCOMES_TOPIC, ALERTS_TOPIC):
        log.create_topic(TopicSpec(topic), exist_ok=True)
    yield config, log, model, champion, registry
    registry.close()
    log.close()


