"""Consumer groups across processes: two members split the partitions; one is killed with SIGKILL mid-stream;
the other takes its partitions over after the session timeout; every record is processed at least once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kawa.config import KawaConfig
from kawa.log import EventLog, TopicSpec, open_log
from tests.log.conftest import unique

pytestmark = pytest.mark.timeout(240)

SESSION_TIMEOUT_MS = 4000
PARTITIONS = 4

# One member: appends "partition offset value" per processed record to its file, then commits (so a crash
# between the two can only cause a redelivery, never a loss). "# assigned ..." lines trace the assignment.
WORKER = """
import os, sys, time
from kawa.config import KawaConfig
from kawa.log import open_log

uri, topic, group, out, stop, session = sys.argv[1:7]
log = open_log(uri, KawaConfig())
consumer = log.consumer(group, [topic], session_timeout_ms=int(session), client_id=os.path.basename(out))
last = None
with open(out, "a", buffering=1) as f:
    while not os.path.exists(stop):
        records = consumer.poll(0.1, max_records=5)
        assigned = sorted(tp.partition for tp in consumer.assignment())
        if assigned != last:
            f.write("# assigned " + ",".join(map(str, assigned)) + "\\n")
            last = assigned
        for r in records:
            f.write(f"{r.partition} {r.offset} {r.value.decode()}\\n")
        if records:
            consumer.commit()
            time.sleep(0.02)  # 'work': keeps the stream going long enough to kill a member mid-way
consumer.close()
log.close()
"""


class Member:
    def __init__(self, script: Path, uri: str, topic: str, group: str, out: Path, stop: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, str(script), uri, topic, group, str(out), str(stop), str(SESSION_TIMEOUT_MS)],
            stdout=subprocess.DEVNULL,
            stderr=open(out.with_suffix(".err"), "w"),  # noqa: SIM115 - the child owns it
        )

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines() if self.out.exists() else []

    def assignments(self) -> list[set[int]]:
        """Every assignment the member reported, in order."""
        prefix = "# assigned "
        return [
            {int(p) for p in line[len(prefix) :].split(",") if p} for line in self.lines() if line.startswith(prefix)
        ]

    def assigned(self) -> set[int]:
        history = self.assignments()
        return history[-1] if history else set()

    def processed_partitions(self) -> set[int]:
        return {int(line.split()[0]) for line in self.lines() if not line.startswith("#")}

    def values(self) -> list[str]:
        return [line.split()[2] for line in self.lines() if not line.startswith("#")]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        return self.out.with_suffix(".err").read_text()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def shared_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EventLog, str]]:
    if request.param == "kafka":
        uri = f"kafka://{request.getfixturevalue('kafka_bootstrap')}"
    else:
        uri = f"embedded:{tmp_path / 'log'}"
    log = open_log(uri, KawaConfig(home=tmp_path / ".kawa"))
    yield log, uri
    log.close()


def wait_for(check: Callable[[], object], timeout: float, what: str, members: list[Member]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            details = "\n".join(
                f"{m.out.name}: alive={m.alive()} {m.lines()[-3:]}\n{m.stderr()[-2000:]}" for m in members
            )
            pytest.fail(f"{what} within {timeout}s\n{details}")
        time.sleep(0.1)


def test_a_killed_member_loses_no_records(shared_log: tuple[EventLog, str], tmp_path: Path) -> None:
    log, uri = shared_log
    topic, group = unique("groups"), unique("g")
    log.create_topic(TopicSpec(topic, PARTITIONS))
    script = tmp_path / "member.py"
    script.write_text(WORKER)
    stop = tmp_path / "stop"
    a = Member(script, uri, topic, group, tmp_path / "a.txt", stop)
    b = Member(script, uri, topic, group, tmp_path / "b.txt", stop)
    members = [a, b]
    try:
        everything = set(range(PARTITIONS))
        wait_for(
            lambda: (
                a.assigned()
                and b.assigned()
                and not a.assigned() & b.assigned()
                and a.assigned() | b.assigned() == everything
            ),
            60,
            "the two members did not split the partitions",
            members,
        )
        producer = log.producer()
        produced = [f"r{i}" for i in range(600)]
        for value in produced[:400]:
            producer.produce(topic, value.encode(), key=value.encode())
        producer.flush(30)

        wait_for(lambda: len(a.values()) >= 40, 60, "member a processed nothing", members)
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait(10)
        assert len(set(a.values())) < 300, "a finished its share before it was killed; the test proves nothing"

        for value in produced[400:]:
            producer.produce(topic, value.encode(), key=value.encode())
        producer.flush(30)
        wait_for(lambda: b.assigned() == everything, 60, "b did not take over a's partitions", members)
        wait_for(
            lambda: set(a.values()) | set(b.values()) >= set(produced), 90, "some records were never processed", members
        )
        stop.touch()
        b.process.wait(30)
        assert b.process.returncode == 0, b.stderr()

        processed = a.values() + b.values()
        assert set(processed) == set(produced)  # none lost, nothing invented; repeats allowed (at-least-once)
        first_split = next(parts for parts in b.assignments() if parts and parts != everything)
        assert b.processed_partitions() - first_split, "b never processed a partition it took over from a"
    finally:
        stop.touch()
        for member in members:
            if member.alive():
                member.process.kill()
                member.process.wait(10)
