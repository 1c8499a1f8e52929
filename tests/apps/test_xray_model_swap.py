"""Promoting a new model version while images stream in: later rows carry the new version, none fails."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kawa.apps.xray.generator import Generator
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.stack import XrayStack
from kawa.config import KawaConfig
from kawa.ml.registry import Registry

from .conftest import TrainedModel
from .xray_checks import result_rows

MODEL = "pneumonia-swap"
RATE, SECONDS = 25.0, 4.0
SWAP_LAG_S = 2.0
"""Alias move → new version serving: the move event on kawa.models (or a 1 s registry poll) + the load."""


def _register_two_versions(config: KawaConfig) -> None:
    """Versions 1 and 2 of ``MODEL`` (the session's ONNX model, logged twice), champion on 1."""
    from kawa.ml import tracking

    registry = Registry(config, publish=False)
    try:
        onnx_file = next(registry.local_path("pneumonia", 1).rglob("*.onnx"))
        for _ in range(2):
            with tracking.run("xray-swap-test", config=config) as run:
                run.log_model(onnx_file.read_bytes(), flavor="onnx", register_as=MODEL)
        registry.promote(MODEL, 1)
    finally:
        registry.close()


def test_promotion_mid_run_switches_versions_without_failures(tmp_path: Path, trained_model: TrainedModel) -> None:
    config = trained_model.config(tmp_path / ".kawa")
    _register_two_versions(config)
    settings = XraySettings(partitions=2, seed=5, model_name=MODEL, dicom_fraction=0.3)
    with XrayStack(config, settings) as stack:
        generator = Generator(settings, store=stack.store, pool=16)
        thread = threading.Thread(target=generator.run, kwargs={"rate": RATE, "duration": SECONDS})
        thread.start()
        time.sleep(SECONDS / 3)
        registry = Registry(stack.platform.backends)  # publishes the move on kawa.models, as `kawa models promote` does
        try:
            promoted_at = time.time()
            registry.promote(MODEL, 2)
        finally:
            registry.close()
        thread.join()
        n = len(generator.uploads)
        counts = stack.wait_until(lambda c: c.results >= n, timeout=60)
        stats = stack.host.metrics()["xray.risk-assessment"] if stack.host else None

    assert counts.results == counts.processed == n and counts.dead_lettered == 0, counts
    assert stats is not None and stats.failed_attempts == 0 and stats.dead_lettered == 0, stats
    rows = {r.object_key: r for r in result_rows(stack.results_url)}
    put_time = {u.key: u.put_time for u in generator.uploads}
    before = [rows[k] for k, t in put_time.items() if t < promoted_at and rows[k].time < promoted_at]
    after = [rows[k] for k, t in put_time.items() if t > promoted_at + SWAP_LAG_S]
    assert before and after, (len(before), len(after))
    assert {r.model_version for r in before} == {1}
    assert {r.model_version for r in after} == {2}
    assert set(counts.versions) == {1, 2}
