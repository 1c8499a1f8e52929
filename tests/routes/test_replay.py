"""Batch → stream: pacing by event time, and `kawa replay` on a Parquet file with a progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kawa.config import load_config
from kawa.events import from_record
from kawa.log import open_log
from kawa.routes.replay import Pacer, publish_file

# Tolerance: each record's publish time (log timestamp, relative to the first) is within this many seconds of
# its scheduled time, (event time - first event time) / speed.
TOLERANCE_S = 0.15


def _parquet(path: Path, gaps_s: list[float]) -> list[datetime]:
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    times, t = [], start
    for gap in gaps_s:
        t += timedelta(seconds=gap)
        times.append(t)
    table = pa.table(
        {
            "ts": times,
            "account": [f"acct-{i % 3}" for i in range(len(times))],
            "amount": [float(i) for i in range(len(times))],
        }
    )
    pq.write_table(table, path)
    return times


def test_pacing_follows_event_times_at_speed(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    # 12 events over 60 s of event time; at speed 60 they span ~1 s of wall time (irregular gaps).
    times = _parquet(path, [0, 3, 9, 1, 0, 12, 5, 5, 2, 8, 10, 5])
    config = load_config(home=str(tmp_path / ".kawa"))
    log = open_log(config.log.uri, config)
    from kawa.log.base import TopicSpec

    log.create_topic(TopicSpec("tx"))
    producer = log.producer()
    result = publish_file(path, producer, "tx", time_column="ts", key_column="account", speed=60)
    producer.close()
    consumer = log.consumer("check", ["tx"])
    records = consumer.poll(timeout=2.0, max_records=100)
    consumer.close()
    log.close()
    assert result.published == len(times) == len(records)
    first_ts, first_event = records[0].timestamp_ms / 1000, times[0].timestamp()
    for record, event_time in zip(records, times, strict=True):
        scheduled = (event_time.timestamp() - first_event) / 60
        actual = record.timestamp_ms / 1000 - first_ts
        assert abs(actual - scheduled) <= TOLERANCE_S, (scheduled, actual)
        event = from_record(record)
        assert event.get_attributes()["time"] == event_time  # the CloudEvent carries the event time
    assert records[1].key == b"acct-1"
    assert from_record(records[0]).get_data()["amount"] == 0.0


def test_max_rate_and_backwards_time() -> None:
    clock = [100.0]
    pacer = Pacer(max_rate=10, clock=lambda: clock[0])
    assert pacer.due(None) == 100.0
    pacer.released(100.0)
    assert pacer.due(None) == pytest.approx(100.1)
    sped = Pacer(speed=10, clock=lambda: clock[0])
    assert sped.due(1000.0) == 100.0
    assert sped.due(1050.0) == pytest.approx(105.0)
    assert sped.due(900.0) == 100.0  # event time went backwards: release at once


def test_kawa_replay_streams_a_parquet_file_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "week.parquet"
    _parquet(path, [0] + [30.0] * 199)  # 200 rows, 100 minutes of event time
    env = {**os.environ, "KAWA_HOME": str(tmp_path / ".kawa"), "COLUMNS": "120"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kawa.cli",
            "replay",
            str(path),
            "--topic",
            "week",
            "--time-column",
            "ts",
            "--speed",
            "6000",
            "--key-column",
            "account",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "published 200 rows to week" in done.stdout
    assert "200/200" in done.stdout  # the progress bar's last state
    config = load_config(home=str(tmp_path / ".kawa"))
    log = open_log(config.log.uri, config)
    consumer = log.consumer("check", ["week"])
    records = consumer.poll(timeout=2.0, max_records=500)
    consumer.close()
    log.close()
    assert len(records) == 200
    span = (records[-1].timestamp_ms - records[0].timestamp_ms) / 1000
    assert 0.99 - TOLERANCE_S <= span <= 0.99 + 1.0  # 5970 s of event time at speed 6000
    assert json.loads(records[5].value)["amount"] == 5.0
