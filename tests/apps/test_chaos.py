"""Faults as tests: the chaos harness (``bench/chaos.py``) in a short run on each backend.

The X-ray function and the de-identification route run in their own processes; some are SIGKILLed and
restarted while images arrive (and, on Kafka, the broker is SIGKILLed and started again on its data). Every
upload must still end up exactly once as a result row, a processed and an anonymized object — or, for the
damaged ones, on both dead-letter topics.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.kafka import RestartableKafka

from .conftest import TrainedModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import chaos  # bench/ is not a package: on sys.path above

IMAGES = 40
KILLS = 3


def _check(summary: dict[str, Any]) -> None:
    assert summary["uploads"] == IMAGES and summary["damaged"] >= 2, summary
    assert summary["kills"] == KILLS, summary
    assert summary["lost"] == 0, summary
    assert summary["good_dead_lettered"] == 0, summary
    assert summary["duplicate_effects"] == 0, summary
    good = IMAGES - summary["damaged"]
    assert summary["rows"] == summary["processed"] == summary["anonymized"] == good, summary
    assert summary["result_events_distinct"] == good <= summary["result_events_total"], summary
    assert summary["dead_letters_distinct"] == 2 * summary["damaged"] <= summary["dead_letters_total"], summary
    assert summary["predictions_distinct"] >= good, summary


@pytest.mark.timeout(400)
def test_chaos_embedded(trained_model: TrainedModel) -> None:
    opts = chaos.Options(
        backend="embedded",
        images=IMAGES,
        kills=KILLS,
        broker_restarts=0,
        seed=11,
        model=(trained_model.tracking_uri, trained_model.artifact_root),
        settle_timeout=150,
        show_progress=False,
    )
    summary = chaos.run(opts)
    assert summary["broker_restarts"] == 0, summary  # the embedded log has no broker process
    _check(summary)


@pytest.mark.kafka
@pytest.mark.timeout(600)
def test_chaos_kafka_with_broker_restart(trained_model: TrainedModel, restartable_kafka: RestartableKafka) -> None:
    opts = chaos.Options(
        backend="kafka",
        images=IMAGES,
        kills=KILLS,
        broker_restarts=1,
        broker_down_s=25,  # with the ≥ 6 s start on its data: dark longer than the producers' 30 s timeout
        rate=10,  # faster than the pipeline under faults: events are in flight when the broker dies
        seed=11,
        model=(trained_model.tracking_uri, trained_model.artifact_root),
        settle_timeout=150,
        show_progress=False,
    )
    summary = chaos.run(opts, broker=restartable_kafka)
    assert summary["broker_restarts"] == 1 and restartable_kafka.kills >= 1, summary
    assert restartable_kafka.running, "the broker is back after its restart"
    _check(summary)
