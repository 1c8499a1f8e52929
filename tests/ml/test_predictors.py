"""ModelManager: flavors (sklearn, ONNX, pyfunc), caching, pinning, prediction events, hot swap under load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from kawa.config import KawaConfig
from kawa.events import from_record
from kawa.ml import tracking
from kawa.ml.predictors import ModelManager
from kawa.ml.registry import Registry
from tests.ml.helpers import register_versions, wait_for

X = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)


def _predictions(log: Any, group: str = "check") -> list[dict[str, Any]]:
    consumer = log.consumer(group, ["predictions"], auto_offset_reset="earliest")
    out: list[dict[str, Any]] = []
    try:
        while batch := consumer.poll(timeout=0.5, max_records=5000):
            out += [from_record(r).get_data() for r in batch]  # type: ignore[misc]
    finally:
        consumer.close()
    return out


def test_sklearn_and_onnx_versions_predict_the_same(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    (v_sk,) = register_versions(model_name, 1)
    from kawa.ml.trainers import logistic_regression

    v_onnx = int(logistic_regression(model_name, n=200, seed=0, flavor="onnx")["version"])
    with ModelManager(config, memory_log) as manager:
        sk = manager.get(f"{model_name}/{v_sk}")
        onnx = manager.get(f"{model_name}/{v_onnx}")
        assert sk.current().flavor == "sklearn" and onnx.current().flavor == "onnx"
        assert manager.get(f"{model_name}/{v_sk}") is sk  # cached
        np.testing.assert_array_equal(sk.predict(X), onnx.predict(X))
        assert onnx.current().input_spec.shape == (4,)


def test_pyfunc_model(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    import mlflow.pyfunc

    class Double(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return np.asarray(model_input) * 2

    with tracking.run("pyfunc-test", config=config) as run:
        version = run.log_model(Double(), flavor="pyfunc", register_as=model_name)
    assert version is not None
    with ModelManager(config, memory_log) as manager:
        model = manager.get(f"{model_name}/{version}")
        assert model.current().flavor == "pyfunc"
        np.testing.assert_allclose(model.predict(X), X * 2)


def test_prediction_events(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    (v1,) = register_versions(model_name, 1)
    Registry(config, memory_log).promote(model_name, v1)
    with ModelManager(config, memory_log) as manager:
        model = manager.get(f"{model_name}@champion")
        out = model.predict(X, event_id="evt-1")
        model.predict(X[:1], input_ref="s3://bucket/key.npy")
        manager.flush()
        events = _predictions(memory_log)
    assert len(events) == 2
    first, second = events
    assert first["model"] == model_name and first["version"] == v1 and first["event_id"] == "evt-1"
    assert first["output"] == out.tolist() and first["input_shape"] == [5, 4]
    assert first["input_digest"].startswith("sha256:") and first["latency_ms"] >= 0
    assert second["input_ref"] == "s3://bucket/key.npy" and "input_digest" not in second


def test_hot_swap_under_load(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    """Predictions through ModelManager while the alias moves twice: none fails; each prediction's logged version
    is the alias target when it started (the old one until the swap, the new one after); one event, one version."""
    v1, v2, v3 = register_versions(model_name, 3)
    registry = Registry(config, memory_log)
    registry.promote(model_name, v1)
    manager = ModelManager(config, memory_log, poll_interval_s=0.5)
    ref = f"{model_name}@champion"
    handle = manager.get(ref)
    assert handle.version == v1
    stop = threading.Event()
    calls: list[tuple[float, int, int, str]] = []  # (start, worker, version, event id)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            event_id = f"w{n}-{i}"
            started = time.monotonic()
            try:
                with manager.use(ref) as model:  # one event = one version
                    model.predict(X, event_id=event_id)
                    time.sleep(0.002)
                    model.predict(X[:2], event_id=event_id)
                calls.append((started, n, model.version, event_id))
            except BaseException as exc:
                failures.append(exc)
            i += 1
            time.sleep(0.001)

    swapped_at: dict[int, float] = {}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker, n) for n in range(4)]
        time.sleep(0.5)
        for target in (v2, v3):
            registry.promote(model_name, target)
            swapped_at[target] = wait_for(lambda t=target: handle.version == t and time.monotonic(), timeout=10)
            time.sleep(0.5)
        stop.set()
        for f in futures:
            f.result()
    manager.flush()
    events = _predictions(memory_log)
    manager.close()

    assert failures == []
    assert len(calls) > 50
    for started, _, version, _ in calls:
        if started > swapped_at[v3]:
            assert version == v3
        elif started > swapped_at[v2]:
            assert version in (v2, v3)
        else:
            assert version in (v1, v2)  # before the first swap finished: old, or new once swapped
    for n in range(4):  # every worker saw versions in promotion order
        seen = [v for _, w, v, _ in sorted(calls) if w == n]
        assert seen == sorted(seen)
        assert {v1, v3} <= set(seen)
    # The log: two predictions per event, both with the same version, equal to what the caller saw.
    by_event: dict[str, set[int]] = {}
    for e in events:
        by_event.setdefault(e["event_id"], set()).add(e["version"])
    expected = {event_id: {version} for _, _, version, event_id in calls}
    assert {k: v for k, v in by_event.items() if k in expected} == expected
    assert sum(1 for e in events if e["event_id"] in expected) == 2 * len(calls)
    assert handle.swaps == 2


def test_failed_load_keeps_the_old_version(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    v1, v2 = register_versions(model_name, 2)
    registry = Registry(config, memory_log)
    registry.promote(model_name, v1)
    manager = ModelManager(config, memory_log, poll_interval_s=60)
    handle = manager.get(f"{model_name}@champion")
    path = registry.local_path(model_name, v2)
    for f in path.glob("model.*"):
        f.write_bytes(b"corrupt")
    registry.promote(model_name, v2)
    assert manager.refresh() == 0
    assert handle.version == v1
    handle.predict(X)
    manager.close()


def test_fixed_version_does_not_follow(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    v1, v2 = register_versions(model_name, 2)
    Registry(config, memory_log).promote(model_name, v1)
    with ModelManager(config, memory_log, poll_interval_s=0.1) as manager:
        fixed = manager.get(f"{model_name}/{v1}")
        Registry(config, memory_log).promote(model_name, v2)
        manager.refresh()
        assert fixed.version == v1
        assert manager.get(f"{model_name}@champion").version == v2


def test_unknown_refs(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    from kawa.errors import ModelNotFound

    with ModelManager(config, memory_log) as manager, pytest.raises(ModelNotFound):
        manager.get(f"{model_name}@champion")


def test_pinned_block_keeps_one_version_across_a_swap(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    """What a function host wraps around one event: repeated ctx.model(ref).predict calls never mix versions."""
    from kawa.ml.predictors import pinned

    v1, v2 = register_versions(model_name, 2)
    registry = Registry(config, memory_log)
    registry.promote(model_name, v1)
    with ModelManager(config, memory_log, poll_interval_s=60) as manager:
        ref = f"{model_name}@champion"
        with pinned():
            manager.get(ref).predict(X, event_id="e1")
            registry.promote(model_name, v2)
            assert manager.refresh() == 1  # swapped while the event is in flight
            assert manager.get(ref).version == v1
            manager.get(ref).predict(X, event_id="e1")
            with pinned():  # a nested block (another event) sees the new version
                assert manager.get(ref).version == v2
        assert manager.get(ref).version == v2
        manager.flush()
        versions = {e["version"] for e in _predictions(memory_log) if e["event_id"] == "e1"}
    assert versions == {v1}
    registry.close()
