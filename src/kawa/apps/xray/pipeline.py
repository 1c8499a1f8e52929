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
from pathlib import Path
from typing import Any

import kawa
from kawa.apps.xray.events import ASSESSED_TYPE, XrayAssessed, image_entity
from kawa.apps.xray.features import SNAPSHOT, summarize
from kawa.apps.xray.imaging import UndecodableImage, annotate, decode, encode_png, model_input, redact_text
from kawa.apps.xray.results import ResultRow, shared_results_db
from kawa.apps.xray.settings import XraySettings
from kawa.events import CloudEvent
from kawa.functions import App, Context, PermanentError

RESULT_TYPE = ASSESSED_TYPE
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


def build_app(
    settings: XraySettings | None = None,
    *,
    results_db: str | None = None,
    name: str = "xray",
    home: Path | None = None,
) -> App:
    """The app with ``settings``; ``results_db`` (SQLAlchemy URL) overrides ``settings.results_db``.

    Without either, rows go to ``sqlite:///<home>/xray/results.db``: ``home`` is the Kawa home of the
    platform the app runs on (the plugin passes it; default: the home of the loaded ``kawa.yaml``).
    """
    s = settings or XraySettings()
    app = App(name, config={"xray": s.model_dump(mode="json")})
    db_url = results_db or s.results_db or s.results_url(home if home is not None else _configured_home())

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
        outputs=(s.results_topic,),
    )
    def risk_assessment(obj: kawa.ObjectEvent, ctx: Context) -> CloudEvent | None:
        return assess(obj, ctx, s, db_url) if obj.is_created else None

    return app


def assess(record: kawa.ObjectEvent, ctx: Context, s: XraySettings, db_url: str) -> CloudEvent:
    """Assess one uploaded image: one result event, and (``record_decisions``) one decision record for
    monitoring — entity ``bucket/key``, score the risk, action the label, features the image summary of the
    model input (:data:`kawa.apps.xray.features.SNAPSHOT`) — once the outputs are written."""
    started = time.perf_counter()
    data = record.read()
    try:
        pixels = decode(data)
    except UndecodableImage as exc:
        # No retry can fix the bytes; the reason names the object key and what is wrong, never the content.
        raise PermanentError(f"{record.bucket}/{record.key}: {exc}") from None
    clean = redact_text(pixels, s.redact_margin_px)  # the same redaction the trainer applies
    # Pinned: one version for this whole event. The image is the unit of any experiment running on the model
    # (the loop's canary): it gets its arm's version, recorded with arm and propensity; else the champion.
    predictor = ctx.model(s.model_ref, unit=image_entity(record.bucket, record.key))
    source = trained_on(predictor)
    risk = float(predictor.predict(model_input(clean, s.model_input_size)[None, :])[0])  # linked to the event
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
    result = XrayAssessed(
        event=record.ref,
        bucket=record.bucket,
        key=record.key,
        processed_bucket=s.processed_bucket,
        processed_key=out_key,
        model=predictor.name,
        model_version=int(predictor.version),
        trained_on=source,
        risk=risk,
        label=label,
        latency_ms=round(latency_ms, 3),
        e2e_ms=round((now - uploaded) * 1000, 3) if uploaded is not None else None,
        time=now,
    )
    shared_results_db(db_url).record(ResultRow.of(result))
    if s.record_decisions:
        summary = summarize(clean, s.model_input_size)
        ctx.decide(
            image_entity(record.bucket, record.key),
            model=predictor,
            score=risk,
            action=label,
            features=summary.features(),
            snapshot=SNAPSHOT,
        )
    ctx.metrics.incr(f"label.{label.lower()}")
    return ctx.new_event(RESULT_TYPE, result.data(), subject=posixpath.join(record.bucket, record.key))


def describe(settings: XraySettings) -> dict[str, Any]:
    """What the pipeline reads and writes, for status displays."""
    return {
        "buckets": list(settings.buckets()),
        "topics": [settings.images_topic, settings.results_topic, settings.dead_letter_topic],
        "model": settings.model_ref,
    }


def _configured_home() -> Path:
    from kawa.config import load_config

    return load_config().home


def __getattr__(name: str) -> Any:
    """``app``: the app with default settings (``kawa worker --app kawa.apps.xray.pipeline:app``), built on
    first use so that importing this module reads no configuration."""
    if name == "app":
        built = globals()["app"] = build_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
