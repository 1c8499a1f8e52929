"""The X-ray app: the ``risk-assessment`` function, and the wiring it runs on.

::

    bucket xray-images ──notification──▶ topic xray-images ──▶ risk-assessment
        fetch → decode (PNG/JPEG/DICOM) → redact detected burned-in text → pneumonia@champion → label
        ├─▶ bucket xray-images-processed   annotated (label, risk, what the model was trained on), PHI-free PNG
        ├─▶ results table                  time, object, model name/version, risk, label, latency
        └─▶ topic xray-results             the same as a CloudEvent
    undecodable upload ─▶ topic xray-images.dlq with the reason (no patient data in it)

Run it with ``kawa worker --app kawa.apps.xray.pipeline:app`` (Kafka) or under ``kawa up`` / ``kawa demo xray``
(embedded). :func:`build_app` makes the same app with your own :class:`~kawa.apps.xray.settings.XraySettings`.
"""

from __future__ import annotations

import posixpath
import time
from typing import Any

from kawa.apps.xray.imaging import UndecodableImage, annotate, decode, encode_png, model_input, redact_text
from kawa.apps.xray.results import ResultRow, shared_results_db
from kawa.apps.xray.settings import XraySettings
from kawa.events import CloudEvent
from kawa.functions import App, Context, PermanentError
from kawa.store import ObjectEvent, parse_records

RESULT_TYPE = "dev.kawa.xray.assessed"
FUNCTION = "risk-assessment"
TRAINED_ON_TAG = "kawa.lineage.trained_on"
"""The model version tag that says what the model learned from (``"generated images"``); see train.py."""


def trained_on(predictor: object) -> str:
    """What ``predictor``'s version was trained on: its lineage (``Predictor.lineage``), else the tag older
    versions carry; ``"unknown"`` without either."""
    lineage = getattr(predictor, "lineage", None)
    described = lineage.described() if lineage is not None else None
    if described:
        return str(described)
    tags = getattr(predictor, "tags", None)
    value = tags.get(TRAINED_ON_TAG) if isinstance(tags, dict) else None
    return str(value) if value else "unknown"


def processed_key(key: str) -> str:
    """Where the annotated image of ``key`` goes: the same key as PNG (``a/b.dcm`` → ``a/b.dcm.png``)."""
    return key if key.lower().endswith(".png") else f"{key}.png"


def build_app(settings: XraySettings | None = None, *, results_db: str | None = None, name: str = "xray") -> App:
    """The app with ``settings``; ``results_db`` (SQLAlchemy URL) overrides ``settings.results_db``.

    Without either, rows go to ``sqlite:///<kawa home>/xray/results.db`` of the configuration the function
    host runs with.
    """
    s = settings or XraySettings()
    app = App(name, config={"xray": s.model_dump(mode="json")})
    db_url = results_db or s.results_db

    @app.function(
        name=FUNCTION,
        bucket=s.incoming_bucket,  # only its records: never the processed bucket's, should it notify this topic
        on_foreign="skip",
        topic=s.images_topic,
        concurrency=4,
        min_scale=1,
        max_scale=4,
        retries=2,
        backoff_s=0.1,
        reply_topic=s.results_topic,
        dead_letter_topic=s.dead_letter_topic,
    )
    def risk_assessment(event: CloudEvent, ctx: Context) -> list[CloudEvent]:
        nonlocal db_url
        if db_url is None:
            from kawa.config import load_config

            db_url = s.results_url(load_config().home)
        return assess(event, ctx, s, db_url)

    return app


def assess(event: CloudEvent, ctx: Context, s: XraySettings, db_url: str) -> list[CloudEvent]:
    """Assess every created object the notification names; one result event per image."""
    replies = []
    for record in parse_records(event):
        if not record.is_created:
            continue
        replies.append(_assess_one(record, event, ctx, s, db_url))
    return replies


def _assess_one(record: ObjectEvent, event: CloudEvent, ctx: Context, s: XraySettings, db_url: str) -> CloudEvent:
    started = time.perf_counter()
    with ctx.store.get(record.bucket, record.key) as reader:
        data = reader.read()
    try:
        pixels = decode(data)
    except UndecodableImage as exc:
        # No retry can fix the bytes; the reason names the object key and what is wrong, never the content.
        raise PermanentError(f"{record.bucket}/{record.key}: {exc}") from None
    clean = redact_text(pixels, s.redact_margin_px)  # the same redaction the trainer applies
    predictor = ctx.model(s.model_ref)  # pinned: one version for this whole event
    source = trained_on(predictor)
    risk = float(predictor.predict(model_input(clean, s.model_input_size)[None, :], event_id=event.get_id())[0])
    label = s.label_for(risk)
    out_key = processed_key(record.key)
    ctx.store.put(
        s.processed_bucket,
        out_key,
        encode_png(annotate(clean, label, risk, source)),
        content_type="image/png",
        metadata={
            "risk": f"{risk:.4f}",
            "label": label,
            "model": f"{predictor.name}/{predictor.version}",
            "trained_on": source,
        },
    )
    now = time.time()
    latency_ms = (time.perf_counter() - started) * 1000
    uploaded = record.time.timestamp() if record.time is not None else None
    row = ResultRow(
        time=now,
        bucket=record.bucket,
        object_key=record.key,
        processed_key=out_key,
        model_name=predictor.name,
        model_version=int(predictor.version),
        risk=risk,
        label=label,
        latency_ms=latency_ms,
        e2e_ms=(now - uploaded) * 1000 if uploaded is not None else None,
        event_id=f"{event.get_source()}#{event.get_id()}",
    )
    shared_results_db(db_url).record(row)
    ctx.metrics.incr(f"label.{label.lower()}")
    return ctx.new_event(
        RESULT_TYPE,
        {
            "bucket": record.bucket,
            "key": record.key,
            "processed_bucket": s.processed_bucket,
            "processed_key": out_key,
            "model": predictor.name,
            "model_version": int(predictor.version),
            "trained_on": source,
            "risk": risk,
            "label": label,
            "latency_ms": round(latency_ms, 3),
            "e2e_ms": round(row.e2e_ms, 3) if row.e2e_ms is not None else None,
            "time": now,
        },
        subject=posixpath.join(record.bucket, record.key),
    )


def describe(settings: XraySettings) -> dict[str, Any]:
    """What the pipeline reads and writes, for status displays."""
    return {
        "buckets": list(settings.buckets()),
        "topics": [settings.images_topic, settings.results_topic, settings.dead_letter_topic],
        "model": settings.model_ref,
    }


app = build_app()
"""The app with default settings: ``kawa worker --app kawa.apps.xray.pipeline:app``."""
