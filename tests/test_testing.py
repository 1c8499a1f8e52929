"""``kawa.testing``: a user's handler test needs no log, no store server and no model file.

Every test here runs with the log and store registries made to fail, so anything that tried to open a log
or a store from configuration (instead of using what ``kawa.testing.invoke`` hands the handler) would fail
the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kawa
from kawa.errors import FunctionNotFound, InvalidFunction
from kawa.events import CloudEvent
from kawa.store import S3Record as NotificationRecord
from kawa.testing import cloud_event, invoke, s3_created, s3_removed

app = kawa.App("clinic", config={"threshold": 0.5})


@app.function(bucket="scans", reply_topic="findings", outputs=("audit",))
def triage(obj: kawa.ObjectEvent, ctx: kawa.Context) -> CloudEvent:
    """A user's handler: read the object, ask the model, write an output object, emit an audit event."""
    pixels = np.frombuffer(obj.read(), dtype=np.uint8).astype(np.float32)
    model = ctx.model("triage@champion")
    risk = float(model.predict(pixels[None, :])[0])
    label = "urgent" if risk >= ctx.config["threshold"] else "routine"
    ctx.store.put("scans-triaged", obj.key + ".json", json.dumps({"label": label}).encode())
    ctx.emit("audit", ctx.new_event("clinic.audited", {"key": obj.key, "model": model.ref}))
    if obj.size == 0:
        raise kawa.PermanentError(f"{obj.bucket}/{obj.key} is empty")
    return ctx.new_event("clinic.triaged", {"key": obj.key, "risk": risk, "label": label})


class Constant:
    """A fake model: the same risk for every input."""

    version = 7

    def __init__(self, risk: float) -> None:
        self.risk = risk

    def predict(self, x: Any) -> list[float]:
        return [self.risk] * len(x)


@pytest.fixture(autouse=True)
def no_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Opening a log or a store from a URI fails: the handler must get by on what invoke gives it."""
    from kawa.log import log_backends
    from kawa.store import store_backends

    def refuse(uri: str, **_: object) -> None:
        raise AssertionError(f"a unit test opened a backend from configuration: {uri!r}")

    monkeypatch.setattr(log_backends, "build", refuse)
    monkeypatch.setattr(store_backends, "build", refuse)
    yield


def test_a_handler_runs_on_an_uploaded_object_with_a_fake_model_and_no_backends() -> None:
    event = s3_created("scans", "ward-3/a.raw", body=bytes(range(16)))
    out = invoke(triage, event, models={"triage@champion": Constant(0.9)}, buckets=["scans-triaged"])

    assert out.outcome == "ok", out.reason
    (reply,) = out.replies
    assert reply.get_type() == "clinic.triaged"
    assert reply.get_data() == {"key": "ward-3/a.raw", "risk": 0.9, "label": "urgent"}
    (audit,) = out.emitted_to("audit")
    assert audit.get_data() == {"key": "ward-3/a.raw", "model": "triage/7"}
    with out.store.get("scans-triaged", "ward-3/a.raw.json") as reader:
        assert json.loads(reader.read()) == {"label": "urgent"}
    (prediction,) = out.predictions
    assert prediction.model == "triage" and prediction.version == 7
    assert prediction.event is not None and prediction.event.id == event.get_id()  # linked without event_id=
    assert prediction.event.source == event.get_source()
    assert np.asarray(prediction.inputs).shape == (1, 16)


def test_ctx_config_is_the_apps_settings_and_invoke_can_override_them() -> None:
    event = s3_created("scans", "b.raw", body=bytes([1, 2, 3]))
    out = invoke(app.get("triage"), event, models={"triage@champion": lambda x: [0.6]}, config={"threshold": 0.8},
                 buckets=["scans-triaged"])
    assert out.outcome == "ok", out.reason
    assert out.replies[0].get_data()["label"] == "routine"  # type: ignore[index]


def test_replies_have_the_ids_the_host_would_give_them() -> None:
    from kawa.functions.context import derived_id

    event = s3_created("scans", "c.raw", body=b"\x01")
    first = invoke(triage, event, models={"triage@champion": Constant(0.1)}, buckets=["scans-triaged"])
    again = invoke(triage, event, models={"triage@champion": Constant(0.1)}, buckets=["scans-triaged"])
    assert first.replies[0].get_id() == again.replies[0].get_id() == derived_id(app.get("triage"), event, "reply:0")


def test_a_permanent_error_is_dead_lettered_with_its_reason() -> None:
    out = invoke(triage, s3_created("scans", "empty.raw", body=b""), models={"triage@champion": Constant(0.1)},
                 buckets=["scans-triaged"])
    assert out.outcome == "dead-lettered"
    assert out.reason_code == "invalid-input"
    assert out.reason == "scans/empty.raw is empty"
    assert isinstance(out.error, kawa.PermanentError)
    assert out.replies == []


def test_an_ordinary_error_fails_and_says_what_the_handler_lacked() -> None:
    out = invoke(triage, s3_created("scans", "d.raw", body=b"\x01"))  # no model given
    assert out.outcome == "failed"
    assert out.reason_code == "handler-error"
    assert out.reason is not None and "triage@champion" in out.reason and "models=" in out.reason


def test_events_the_trigger_does_not_take_are_skipped_with_the_reason() -> None:
    removed = invoke(triage, s3_removed("scans", "a.raw"))
    assert removed.outcome == "skipped"
    assert removed.reason is not None and "ObjectRemoved:Delete" in removed.reason
    foreign = invoke(triage, s3_created("scans-triaged", "a.raw.json", body=b"{}"))
    assert foreign.outcome == "skipped"
    assert foreign.reason is not None and "'scans-triaged'" in foreign.reason


def test_a_foreign_bucket_is_dead_lettered_when_the_trigger_asks_for_it() -> None:
    strict = kawa.App("strict")

    @strict.function(bucket="inbox", topic="inbox-events", on_foreign="dead-letter")
    def handle(obj: kawa.ObjectEvent, ctx: kawa.Context) -> None:
        raise AssertionError("never called for another bucket")

    out = invoke(handle, s3_created("outbox", "x.png"))
    assert (out.outcome, out.reason_code) == ("dead-lettered", "foreign-bucket")


def test_emitting_to_an_undeclared_topic_fails_and_names_the_declared_ones() -> None:
    shop = kawa.App("shop", outputs=("orders.checked",))

    @shop.function(topic="orders", reply_topic="orders.done")
    def check(event: CloudEvent, ctx: kawa.Context) -> None:
        ctx.emit("orders.checked", ctx.new_event("shop.checked", {"ok": True}))
        ctx.emit("payments", ctx.new_event("shop.paid", {}))

    out = invoke(check, cloud_event("shop.order", {"n": 1}))
    assert out.outcome == "failed"
    assert out.reason is not None
    assert "'payments'" in out.reason and "'orders.checked'" in out.reason and "'orders.done'" in out.reason
    assert [topic for topic, _ in out.emitted] == ["orders.checked"]


def test_without_declared_outputs_any_topic_may_be_emitted_to() -> None:
    loose = kawa.App("loose")

    @loose.function(topic="in")
    def fan_out(event: CloudEvent, ctx: kawa.Context) -> None:
        for topic in ("a", "b"):
            ctx.emit(topic, ctx.new_event("loose.out", {"to": topic}))

    out = invoke(fan_out, cloud_event("loose.in", {}))
    assert out.outcome == "ok" and [t for t, _ in out.emitted] == ["a", "b"]


def test_a_cloud_event_handler_gets_the_event_and_an_async_one_is_awaited() -> None:
    plain = kawa.App("plain")

    @plain.function(topic="pings", filter={"type": "com.example.ping"})
    async def pong(event: CloudEvent, ctx: kawa.Context) -> CloudEvent:
        return ctx.new_event("com.example.pong", {"got": event.get_data()})

    out = invoke(pong, cloud_event("com.example.ping", {"n": 3}))
    assert out.outcome == "ok" and out.replies[0].get_data() == {"got": {"n": 3}}
    filtered = invoke(pong, cloud_event("com.example.other", {}))
    assert filtered.outcome == "skipped" and filtered.reason is not None and "com.example.ping" in filtered.reason


def test_an_object_event_carries_the_record_and_the_event_identity() -> None:
    seen: list[kawa.ObjectEvent] = []
    probe = kawa.App("probe")

    @probe.function(bucket="inbox")
    def look(obj: kawa.ObjectEvent, ctx: kawa.Context) -> None:
        seen.append(obj)

    event = s3_created("inbox", "dir/x y.png", body=b"abc", metadata={"ward": "3"})
    assert invoke(look, event).outcome == "ok"
    (obj,) = seen
    assert (obj.bucket, obj.key, obj.size, obj.event_name) == ("inbox", "dir/x y.png", 3, "ObjectCreated:Put")
    assert obj.etag == "900150983cd24fb0d6963f7d28e17f72"  # MD5 of b"abc"
    assert obj.ref.source == event.get_source() and obj.ref.id == event.get_id()
    assert obj.time is not None and obj.is_created and dict(obj.metadata) == {"ward": "3"}
    with pytest.raises(AttributeError):
        obj.key = "other"  # type: ignore[misc]


def test_an_object_event_handler_dead_letters_an_event_that_is_no_notification() -> None:
    topical = kawa.App("topical")

    @topical.function(topic="uploads-shared")  # no bucket, no filter: anything on the topic reaches it
    def handle(obj: kawa.ObjectEvent, ctx: kawa.Context) -> None:
        raise AssertionError("never called without an object")

    out = invoke(handle, cloud_event("com.example.order", {"n": 1}))
    assert (out.outcome, out.reason_code) == ("dead-lettered", "invalid-input")
    assert out.reason is not None and "not an S3 notification" in out.reason and "bucket=" in out.reason


def test_the_store_given_is_the_store_used() -> None:
    from kawa.store.memory import MemoryStore

    store = MemoryStore()
    store.create_bucket("scans")
    store.create_bucket("scans-triaged")
    store.put("scans", "given.raw", b"\x05\x06")
    out = invoke(triage, s3_created("scans", "given.raw", body=b"not this"), store=store,
                 models={"triage@champion": Constant(0.2)})
    assert out.outcome == "ok" and out.store is store
    assert np.asarray(out.predictions[0].inputs).tolist() == [[5.0, 6.0]]  # the object already there was read


def test_invoke_needs_a_registered_function() -> None:
    def stray(event: CloudEvent, ctx: kawa.Context) -> None: ...

    with pytest.raises(FunctionNotFound, match=r"@app\.function"):
        invoke(stray, cloud_event("x", {}))


def test_a_handler_annotated_with_the_notification_record_type_is_refused() -> None:
    wrong = kawa.App("wrong")
    with pytest.raises(InvalidFunction, match=r"kawa\.ObjectEvent"):

        @wrong.function(bucket="inbox")
        def handle(obj: NotificationRecord, ctx: kawa.Context) -> None: ...


def test_the_xray_function_assesses_an_upload_with_a_fake_model(tmp_path: Path) -> None:
    """The reference app's handler, unit-tested the way a user would: no log, no store server, no model."""
    from kawa.apps.xray.imaging import encode_png
    from kawa.apps.xray.pipeline import RESULT_TYPE, build_app
    from kawa.apps.xray.results import shared_results_db
    from kawa.apps.xray.settings import XraySettings

    settings = XraySettings()
    xray = build_app(settings, results_db=f"sqlite:///{tmp_path / 'results.db'}")
    image = encode_png((np.linspace(0, 255, 64 * 64).reshape(64, 64)).astype(np.uint8))
    event = s3_created(settings.incoming_bucket, "15823-dd03/a.png", body=image)
    out = invoke(xray.get("risk-assessment"), event, models={settings.model_ref: Constant(0.97)},
                 buckets=[settings.processed_bucket])

    assert out.outcome == "ok", out.reason
    (reply,) = out.replies
    assert reply.get_type() == RESULT_TYPE
    assert reply.get_data()["label"] == "Pneumonia" and reply.get_data()["model_version"] == 7  # type: ignore[index]
    assert out.store.head(settings.processed_bucket, "15823-dd03/a.png").metadata["label"] == "Pneumonia"
    assert out.predictions[0].event is not None and out.predictions[0].event.id == event.get_id()
    (row,) = shared_results_db(f"sqlite:///{tmp_path / 'results.db'}").rows()
    assert row.object_key == "15823-dd03/a.png" and row.model_version == 7

    broken = invoke(xray.get("risk-assessment"), s3_created(settings.incoming_bucket, "b.png", body=b"not a png"),
                    models={settings.model_ref: Constant(0.5)})
    assert broken.outcome == "dead-lettered" and broken.reason_code in ("undecodable", "invalid-input")
    assert broken.reason is not None and "b.png" in broken.reason


def test_importing_kawa_testing_stays_light() -> None:
    import subprocess
    import sys

    code = ("import sys, kawa, kawa.testing; heavy = {'numpy', 'cloudevents', 'kawa.store', 'kawa.log'} & "
            "{m.split('.')[0] if not m.startswith('kawa') else '.'.join(m.split('.')[:2]) for m in sys.modules}; "
            "assert not heavy, heavy; assert kawa.testing.invoke and kawa.PermanentError and kawa.ObjectEvent")
    subprocess.run([sys.executable, "-c", code], check=True)
