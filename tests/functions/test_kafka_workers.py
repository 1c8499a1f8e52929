"""Two ``kawa worker`` processes against real Apache Kafka share the load; stopping one loses nothing.

Events are produced while both run; once both have handled some, one is stopped with SIGTERM (a graceful
drain) and the other takes its partitions over and finishes. Every event is handled exactly once: the
stopped worker committed what it finished, and the dedupe store both share covers the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from kawa.config import load_config
from kawa.events import to_kafka
from kawa.log import open_log
from kawa.log.base import TopicSpec
from tests.functions.conftest import committed, events, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

N = 600
PARTITIONS = 4
KAWA = str(Path(sys.executable).parent / "kawa")

APP = '''
import os, time
import kawa

app = kawa.App("share")


@app.function(topic=os.environ["SHARE_TOPIC"], group=os.environ["SHARE_GROUP"], concurrency=2, max_scale=2)
def work(event, ctx):
    time.sleep(0.01)
    with open(os.environ["SHARE_OUT"], "a") as out:
        out.write(event.get_id() + "\\n")
'''


def start(tmp_path: Path, name: str, bootstrap: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [KAWA, "--log", f"kafka://{bootstrap}", "worker", "--app", "shareapp:app", "--session-timeout-ms", "3000"],
        cwd=tmp_path,
        env={**os.environ, "SHARE_OUT": str(tmp_path / f"{name}.out")},
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"{name}.err", "w"),
        text=True,
    )


def handled(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_two_workers_share_partitions_and_a_stopped_one_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, group = f"fn-share-{uuid.uuid4().hex[:8]}", f"kawa-fn-share-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SHARE_TOPIC", topic)
    monkeypatch.setenv("SHARE_GROUP", group)
    (tmp_path / "shareapp.py").write_text(APP)
    log = open_log(f"kafka://{kafka_bootstrap}", load_config())
    log.create_topic(TopicSpec(topic, partitions=PARTITIONS))
    a, b = start(tmp_path, "a", kafka_bootstrap), start(tmp_path, "b", kafka_bootstrap)
    out_a, out_b = tmp_path / "a.out", tmp_path / "b.out"
    try:
        for name in ("a", "b"):
            wait_for(lambda n=name: "kawa worker ready" in (tmp_path / f"{n}.err").read_text(), timeout=60)
        batch = events(N, source=f"/share/{topic}")

        def trickle() -> None:  # ~3 s of events, so the stop lands mid-stream
            producer = log.producer()
            for i, event in enumerate(batch):
                key, value, headers = to_kafka(event)
                producer.produce(topic, value, key=key, headers=headers)
                if i % 20 == 19:
                    producer.flush()
                    time.sleep(0.1)
            producer.close()

        producer = threading.Thread(target=trickle)
        producer.start()
        wait_for(lambda: len(handled(out_a)) >= 20 and len(handled(out_b)) >= 20, timeout=60)
        a.send_signal(signal.SIGTERM)
        assert a.wait(60) == 0, (tmp_path / "a.err").read_text()[-3000:]
        stopped_at = len(handled(out_a))
        producer.join()
        wait_for(lambda: len(set(handled(out_a)) | set(handled(out_b))) == N, timeout=90, interval=0.1)
        wait_for(lambda: sum(v or 0 for v in committed(log, group, topic).values()) == N, timeout=30)
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        log.close()
    ids_a, ids_b = handled(out_a), handled(out_b)
    assert stopped_at < N and len(ids_b) > N - stopped_at - 1, "b took over the rest after a stopped"
    assert len(ids_a) >= 20 and len(ids_b) >= 20, "both workers handled part of the load"
    everything = ids_a + ids_b
    assert set(everything) == {f"e{i}" for i in range(N)}, "nothing was lost"
    assert len(everything) == N, f"{len(everything) - N} event(s) handled twice"
