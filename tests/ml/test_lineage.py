"""The public registry API: register, set_alias/promote, rollback, lineage (what a version was trained on)."""

from __future__ import annotations

from typing import Any

from kawa.backends import given_backends
from kawa.config import KawaConfig
from kawa.events import from_record
from kawa.ml import tracking
from kawa.ml.registry import ALIAS_EVENT, Registry
from tests.ml.helpers import register_versions


def test_lineage_names_run_data_parent_and_job(config: KawaConfig, memory_log: Any, model_name: str) -> None:
    registry = Registry(config, memory_log)
    (v1,) = register_versions(model_name, 1)
    first = registry.lineage(model_name, v1)
    assert first.run_id and first.parent_version is None
    assert first.data["data"] == {"topic": "training-data", "partition": "0", "offsets": "0-200"}
    registry.promote(model_name, v1)

    with tracking.run("lineage-test", config=config, tags={"kawa.job_id": "j-test"}) as run:
        run.log_lineage(source="folder:/data/xrays", description="images of the folder xrays", name="images")
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        v2 = run.log_model(model, register_as=model_name)
    assert v2 is not None
    second = registry.lineage(model_name, v2)
    assert second.parent_version == v1  # the champion it was trained to replace
    assert second.job_id == "j-test" and second.run_id == run.run_id
    assert second.data["images"] == {"source": "folder:/data/xrays", "description": "images of the folder xrays"}
    assert second.described("images") == "images of the folder xrays"

    # An explicit parent wins; lineage is also what a loaded predictor carries.
    with tracking.run("lineage-test", config=config) as run:
        v3 = run.log_model(model, register_as=model_name, parent_version=v2)
    assert v3 is not None and registry.lineage(model_name, v3).parent_version == v2
    from kawa.ml.predictors import ModelManager

    with ModelManager(config, memory_log) as manager:
        assert manager.get(f"{model_name}/{v2}").current().lineage.described("images") == "images of the folder xrays"
    registry.close()


def test_set_alias_and_rollback_publish_on_the_backends_log(
    config: KawaConfig, memory_log: Any, model_name: str
) -> None:
    v1, v2 = register_versions(model_name, 2)
    backends = given_backends(config, log=memory_log)
    registry = Registry(backends)  # no log of its own: the backends' log carries the moves
    registry.promote(model_name, v1)
    move = registry.set_alias(model_name, "champion", v2)
    assert (move.action, move.previous, move.version, move.published) == ("set", v1, v2, True)
    back = registry.rollback(model_name)
    assert (back.action, back.version, back.previous) == ("rollback", v1, v2)
    registry.close()
    consumer = memory_log.consumer("lineage-reader", [config.ml.models_topic], auto_offset_reset="earliest")
    try:
        events = [from_record(r) for r in consumer.poll(timeout=1.0, max_records=100)]
    finally:
        consumer.close()
    assert [e.get_type() for e in events] == [ALIAS_EVENT] * 3
    assert [e.get_data()["action"] for e in events] == ["promote", "set", "rollback"]  # type: ignore[index]


def test_a_bare_configuration_publishes_nothing_and_says_so(config: KawaConfig, model_name: str) -> None:
    (v1,) = register_versions(model_name, 1)
    registry = Registry(config)  # never opens a log of its own
    move = registry.promote(model_name, v1)
    assert move.published is False and registry.resolve(f"{model_name}@champion") == v1
