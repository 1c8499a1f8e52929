"""After Ctrl-C the fraud demo waits for what was sent: as long as decisions keep arriving (not a fixed number of
seconds), and it says how many are missing when they stop coming."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from kawa.apps.fraud.demo import Tally, _drain
from kawa.config import KawaConfig
from kawa.log import open_log
from kawa.log.base import TopicSpec

SOURCE = "/fraud/replay/test"


def _decide(producer: object, n: int, every_s: float) -> None:
    for i in range(n):
        body = {"event": {"source": SOURCE}, "action": "pass", "tx_id": i, "score": 0.1, "latency_ms": 1.0}
        producer.send("decisions", json.dumps(body).encode())  # type: ignore[attr-defined]
        time.sleep(every_s)  # a slow app: one decision at a time


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    log = open_log(f"embedded:{tmp_path / 'log'}", KawaConfig(home=tmp_path))
    for topic in ("decisions", "dead"):
        log.create_topic(TopicSpec(topic))
    yield log
    log.close()


def test_the_wait_lasts_while_decisions_keep_coming(log, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    producer = log.producer()
    readers = (log.consumer("d", ["decisions"], auto_offset_reset="earliest"),
               log.consumer("x", ["dead"], auto_offset_reset="earliest"))  # fmt: skip
    tally = Tally(SOURCE)
    slow = threading.Thread(target=_decide, args=(producer, 12, 1.0))  # 12 s in all: longer than any fixed cap
    slow.start()
    _drain(tally, readers, sent=12, stall_s=3.0)
    slow.join()
    assert tally.decided == 12
    assert "no decision yet" not in capsys.readouterr().out
    for reader in readers:
        reader.close()
    producer.close()


def test_a_stalled_app_ends_the_wait_with_the_count_missing(log, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    producer = log.producer()
    _decide(producer, 3, 0.0)
    readers = (log.consumer("d", ["decisions"], auto_offset_reset="earliest"),
               log.consumer("x", ["dead"], auto_offset_reset="earliest"))  # fmt: skip
    tally = Tally(SOURCE)
    _drain(tally, readers, sent=5, stall_s=0.5)
    assert tally.decided == 3
    assert "2 payments sent have no decision yet" in capsys.readouterr().out
    for reader in readers:
        reader.close()
    producer.close()
