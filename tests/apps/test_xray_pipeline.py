"""The X-ray pipeline end to end on the embedded shape: embedded log, local store, in-process function host
and de-identification route. One run of PNG, JPEG and DICOM uploads (plus damaged ones) is inspected from
every side: buckets, results table, result and dead-letter topics, and a search for every planted PHI value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from kawa.apps.xray.generator import Generator
from kawa.apps.xray.imaging import decode, model_input, redact_text
from kawa.apps.xray.pipeline import RESULT_TYPE, processed_key
from kawa.apps.xray.settings import XraySettings
from kawa.apps.xray.stack import Counts, XrayStack
from kawa.deadletter import read_reason
from kawa.events import from_record

from .conftest import TrainedModel
from .xray_checks import (
    Batch,
    box_has_text,
    box_max,
    contains_phi,
    dicom_phi,
    read_topic,
    record_text,
    text_max,
    upload_batch,
)

FORMATS = ["png"] * 5 + ["dicom"] * 4 + ["jpeg"] * 2
N = len(FORMATS)


@dataclass
class Run:
    stack: XrayStack
    settings: XraySettings
    batch: Batch
    counts: Counts
    model: TrainedModel

    def get(self, bucket: str, key: str) -> bytes:
        with self.stack.store.get(bucket, key) as reader:
            return reader.read()


def finished(c: Counts) -> bool:
    return c.results >= N and c.anonymized >= N and c.dead_lettered >= 2 and c.deid_dead_lettered >= 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel) -> Iterator[Run]:
    home = tmp_path_factory.mktemp("xray-e2e") / ".kawa"
    settings = XraySettings(partitions=2, seed=11)
    stack = XrayStack(trained_model.config(home), settings)
    stack.start()
    try:
        batch = upload_batch(Generator(settings, store=stack.store, seed=11), FORMATS)
        counts = stack.wait_until(finished, timeout=120)
        yield Run(stack, settings, batch, counts, trained_model)
    finally:
        stack.stop()


def test_every_image_has_one_row_one_processed_and_one_anonymized_object(run: Run) -> None:
    c = run.counts
    assert (c.uploaded, c.processed, c.results, c.anonymized) == (N + 2, N, N, N), c
    assert (c.dead_lettered, c.deid_dead_lettered) == (2, 2), c
    keys = {u.key for u in run.batch.images}
    rows = run.stack.results.rows()
    assert sorted(r.object_key for r in rows) == sorted(keys)
    s = run.settings
    assert {o.key for o in run.stack.store.list_objects(s.processed_bucket).objects} == {processed_key(k) for k in keys}
    assert {o.key for o in run.stack.store.list_objects(s.anonymized_bucket).objects} == keys


def test_labels_agree_with_scores_thresholds_and_the_model(run: Run) -> None:
    s = run.settings
    rows = {r.object_key: r for r in run.stack.results.rows()}
    x = []
    for upload in run.batch.images:
        row = rows[upload.key]
        assert row.label == s.label_for(row.risk) and 0.0 <= row.risk <= 1.0
        assert (row.model_name, row.model_version) == ("pneumonia", 1)
        assert row.latency_ms > 0 and row.e2e_ms is not None and row.e2e_ms >= row.latency_ms * 0.5
        x.append(model_input(redact_text(decode(run.get(s.incoming_bucket, upload.key)), s.redact_margin_px)))
    expected = run.model.risk(run.stack.config, np.stack(x))
    got = np.array([rows[u.key].risk for u in run.batch.images])
    assert np.allclose(got, expected, atol=1e-5)
    # The processed image carries the same verdict.
    info = run.stack.store.head(s.processed_bucket, processed_key(run.batch.images[0].key))
    assert info.metadata["label"] == rows[run.batch.images[0].key].label and info.content_type == "image/png"
    assert info.metadata["trained_on"] == "generated images"


def test_result_events_match_the_rows(run: Run) -> None:
    records = read_topic(run.stack.log, run.settings.results_topic, N)
    events = [from_record(r) for r in records]
    assert len(events) == N and {e.get_type() for e in events} == {RESULT_TYPE}
    rows = {r.object_key: r for r in run.stack.results.rows()}
    for event in events:
        data = event.get_data()
        assert isinstance(data, dict)
        row = rows[data["key"]]
        assert (data["risk"], data["label"], data["model_version"]) == (row.risk, row.label, row.model_version)
        assert data["trained_on"] == "generated images"  # the model version's tag, for the board
        # Upload → result time travels with the event (the portal's latency panel reads it).
        assert row.e2e_ms is not None and data["e2e_ms"] == round(row.e2e_ms, 3)
        assert data["e2e_ms"] >= data["latency_ms"] > 0


def test_damaged_uploads_are_dead_lettered_with_a_reason(run: Run) -> None:
    s = run.settings
    bad_keys = {u.key for u in run.batch.corrupt}
    for topic, kind in ((s.dead_letter_topic, "function"), (s.deid_dead_letter_topic, "route")):
        records = read_topic(run.stack.log, topic, 2)
        assert len(records) == 2
        for record in records:
            why = read_reason(record.headers)  # the one schema, whichever component wrote it
            assert why is not None and why.message, f"{topic}: no reason in {record.headers}"
            assert why.kind == kind and why.attempts == 1 and why.reason == "undecodable", why
            assert "0x" not in why.message and record.header("kawa-dlq-reason") == b"undecodable"
            assert any(k in record_text(record) for k in bad_keys)
    assert not run.stack.results.summary(prefix="scans/")["count"] > N


def test_no_phi_in_processed_objects(run: Run) -> None:
    s = run.settings
    phi = run.batch.phi
    assert box_has_text(s) > 0.8  # generated images do carry white text in the box
    for upload in run.batch.images:
        key = processed_key(upload.key)
        data = run.get(s.processed_bucket, key)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert contains_phi(data, phi) == [], key
        original = run.get(s.incoming_bucket, upload.key)
        assert text_max(original, data) == 0.0, key  # lossless PNG: the detected text is exactly black
        info = run.stack.store.head(s.processed_bucket, key)
        assert contains_phi(json.dumps(dict(info.metadata)) + key, phi) == []


def test_no_phi_in_anonymized_objects(run: Run) -> None:
    s = run.settings
    for upload in run.batch.images:
        phi = run.batch.phi_for(upload)
        data = run.get(s.anonymized_bucket, upload.key)
        if upload.fmt == "dicom":
            assert data[128:132] == b"DICM"
            assert dicom_phi(data, phi) == [], upload.key
        assert contains_phi(data, phi) == [], upload.key
        # JPEG is re-encoded lossily: allow ringing, never text (glyphs are near 1.0).
        original = run.get(s.incoming_bucket, upload.key)
        assert text_max(original, data) <= (0.15 if upload.fmt == "jpeg" else 0.0), upload.key
        info = run.stack.store.head(s.anonymized_bucket, upload.key)
        assert contains_phi(json.dumps(dict(info.metadata)), phi) == []


def test_no_phi_in_dead_letters(run: Run) -> None:
    s = run.settings
    phi = run.batch.phi
    for topic in (s.dead_letter_topic, s.deid_dead_letter_topic):
        for record in read_topic(run.stack.log, topic, 2):
            assert contains_phi(record_text(record), phi) == [], topic


def test_the_phi_checks_find_what_the_inputs_carry(run: Run) -> None:
    """The same checks on the uploads themselves find the planted PHI: the tests above are not vacuous."""
    s = run.settings
    for upload in run.batch.images:
        data = run.get(s.incoming_bucket, upload.key)
        assert box_max(data, s) > 0.8, upload.key
        if upload.fmt == "dicom":
            found = " ".join(dicom_phi(data, upload.phi))
            assert "PatientName" in found and "PatientID" in found and "PatientBirthDate" in found
            assert "StudyDate" in found
