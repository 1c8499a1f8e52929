"""The results table on SQLite and on a real PostgreSQL server: parameterized SQL, idempotent rows, summaries."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from kawa.apps.xray.results import ResultRow, ResultsDB, percentile


def _row(key: str, event: str, risk: float = 0.3, label: str = "Normal", version: int = 1) -> ResultRow:
    return ResultRow(
        time=time.time(), bucket="xray-images", object_key=key, processed_key=f"{key}.png", model_name="pneumonia",
        model_version=version, risk=risk, label=label, latency_ms=5.0, e2e_ms=9.0 + risk, event_id=event,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> ResultsDB:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'results.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    results = ResultsDB(url)
    request.addfinalizer(results.close)
    if request.param == "postgresql":  # the server's database is shared by the session: start empty
        from kawa.apps.xray.results import results_table

        with results.engine.begin() as conn:
            conn.execute(results_table.delete())
    return results


def test_rows_are_stored_verbatim_and_once_per_event(db: ResultsDB) -> None:
    hostile = "scans/o'brien; DROP TABLE xray_results; --.png"
    assert db.record(_row(hostile, "src#1"))
    assert not db.record(_row(hostile, "src#1"))  # a redelivered event adds nothing
    assert db.record(_row(hostile, "src#2"))  # another event for the same object is another row
    rows = db.rows()
    assert [r.object_key for r in rows] == [hostile, hostile] and db.count() == 2


def test_summary_by_prefix_counts_labels_versions_and_latency(db: ResultsDB) -> None:
    run = f"scans/{uuid.uuid4().hex[:6]}_%/"  # LIKE wildcards in the prefix are matched literally
    for i, (risk, label, version) in enumerate([(0.1, "Normal", 1), (0.7, "Unsure", 1), (0.9, "Pneumonia", 2)]):
        db.record(_row(f"{run}{i}.png", f"e{i}", risk, label, version))
    db.record(_row("scans/other_x/0.png", "e9"))
    db.record(_row(run.replace("_%", "ab") + "1.png", "e10"))  # would match if % and _ were wildcards
    summary = db.summary(run)
    assert summary["count"] == 3 and db.count(run) == 3
    assert summary["labels"] == {"Normal": 1, "Unsure": 1, "Pneumonia": 1}
    assert summary["versions"] == {1: 2, 2: 1}
    assert summary["e2e_p50_ms"] == pytest.approx(9.7) and summary["e2e_p99_ms"] == pytest.approx(9.9)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([], 50) is None


_LEGACY_TABLE = """CREATE TABLE xray_results (
    id INTEGER PRIMARY KEY, time FLOAT NOT NULL, bucket VARCHAR(255) NOT NULL, object_key VARCHAR(1024) NOT NULL,
    processed_key VARCHAR(1024) NOT NULL, model_name VARCHAR(255) NOT NULL, model_version INTEGER NOT NULL,
    risk FLOAT NOT NULL, label VARCHAR(32) NOT NULL, latency_ms FLOAT NOT NULL, e2e_ms FLOAT,
    event_id VARCHAR(512) NOT NULL, CONSTRAINT uq_xray_results_event_object UNIQUE (event_id, object_key))"""


def test_rows_are_keyed_by_the_event_ref_and_a_table_from_before_it_is_migrated(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from kawa.events import EventRef

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the table as an existing .kawa holds it: source#id in event_id
        conn.execute(sa.text(_LEGACY_TABLE))
        conn.execute(sa.text(
            "INSERT INTO xray_results (time, bucket, object_key, processed_key, model_name, model_version, risk, "
            "label, latency_ms, e2e_ms, event_id) VALUES (1.0, 'xray-images', 'old.png', 'old.png', 'pneumonia', "
            "1, 0.2, 'Normal', 5.0, 9.0, 'kawa:s3.local.xray-images#e0')"
        ))
    engine.dispose()
    db = ResultsDB(url)
    try:
        (old,) = db.rows()
        assert old.event_source == "" and old.ref == EventRef("kawa:s3.local.xray-images", "e0")
        a = EventRef("ceph:s3.default.xray-images", "e1")
        b = EventRef("kawa:s3.local.xray-images", "e1")  # the same id from another source: another event
        assert db.record(replace(_row("new.png", a.id), event_source=a.source))
        assert not db.record(replace(_row("new.png", a.id), event_source=a.source))  # redelivered: nothing new
        assert {r.ref for r in db.rows()} == {old.ref, a}
    finally:
        db.close()
    fresh = ResultsDB(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert fresh.record(replace(_row("k.png", a.id), event_source=a.source))
        assert fresh.record(replace(_row("k.png", b.id), event_source=b.source))
        assert not fresh.record(replace(_row("k.png", b.id), event_source=b.source))
        assert sorted(r.ref for r in fresh.rows() if r.ref is not None) == sorted([a, b])
    finally:
        fresh.close()
