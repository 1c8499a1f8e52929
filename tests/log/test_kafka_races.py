"""Kafka clients under concurrent use: nothing crashes the process.

confluent-kafka keeps one "call state" per thread and client while a poll runs callbacks; a poll or flush
nested inside a callback of the same client resets it, and the next callback dereferences nothing (the
process aborts or segfaults). A client destroyed under a poll in flight does the same. Each scenario runs in
a child process with faulthandler on, so that a crash fails the test with a traceback instead of ending
the test session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

SRC = Path(__file__).resolve().parents[2] / "src"

PRELUDE = """
import faulthandler, sys, threading, time, uuid
faulthandler.enable()
from kawa.config import KawaConfig
from kawa.errors import ProducerError, LogError
from kawa.log import TopicSpec, open_log
log = open_log("kafka://" + sys.argv[1], KawaConfig())
topic = "race-" + uuid.uuid4().hex[:10]
log.create_topic(TopicSpec(topic, 2))
"""
EPILOGUE = """
log.delete_topic(topic)
print("survived")
"""


def run_child(body: str, kafka_bootstrap: str) -> str:
    code = PRELUDE + textwrap.dedent(body) + EPILOGUE
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", code, kafka_bootstrap], capture_output=True, text=True, timeout=200, env=env
    )
    assert done.returncode == 0 and "survived" in done.stdout, (
        f"the child process ended with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout


def test_a_flush_or_full_queue_produce_inside_a_delivery_callback_is_an_error_not_a_crash(
    kafka_bootstrap: str,
) -> None:
    out = run_child(
        """
        producer = log.producer()
        seen, refused = [], []

        def report(metadata, error):
            seen.append(metadata)
            if len(seen) == 1:
                try:
                    producer.flush(1)  # would serve the callbacks again, nested in this one
                except ProducerError as exc:
                    refused.append(str(exc))

        for i in range(200):
            producer.produce(topic, b"x", on_delivery=report)
        producer.flush(60)
        assert len(seen) == 200, len(seen)
        assert refused and "from a delivery callback" in refused[0], refused
        producer.close()
        print("refused:", refused[0])
        """,
        kafka_bootstrap,
    )
    assert "cannot flush from a delivery callback" in out


def test_producers_closed_while_other_threads_produce_and_callbacks_run(kafka_bootstrap: str) -> None:
    run_child(
        """
        delivered = [0]

        def report(metadata, error):
            delivered[0] += 1

        for round in range(15):
            producer = log.producer()
            stop = threading.Event()

            def flood():
                while not stop.is_set():
                    try:
                        for _ in range(20):
                            producer.produce(topic, b"y" * 100, on_delivery=report)
                    except ProducerError:  # closed under us: expected
                        return
                    time.sleep(0.001)

            threads = [threading.Thread(target=flood) for _ in range(2)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while delivered[0] < (round + 1) * 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            try:
                producer.close()
            except ProducerError:
                pass  # a record produced during close may miss the flush: not a crash
            stop.set()
            for t in threads:
                t.join()
            del producer
        assert delivered[0] >= 15 * 20, delivered[0]
        """,
        kafka_bootstrap,
    )


def test_a_consumer_closed_while_another_thread_polls_it(kafka_bootstrap: str) -> None:
    run_child(
        """
        producer = log.producer()
        for i in range(100):
            producer.produce(topic, str(i).encode())
        producer.close()
        for round in range(15):
            consumer = log.consumer("race-" + uuid.uuid4().hex[:8], [topic], session_timeout_ms=6000)
            polled = threading.Event()
            errors = []

            def spin():
                while True:
                    try:
                        consumer.poll(0.02)
                    except LogError as exc:  # closed: the poll that follows close() says so
                        errors.append(exc)
                        return
                    polled.set()

            thread = threading.Thread(target=spin)
            thread.start()
            polled.wait(30)
            consumer.close()
            thread.join(30)
            assert not thread.is_alive()
            assert errors and "closed" in str(errors[0]), errors
        """,
        kafka_bootstrap,
    )


def test_clients_opened_before_a_fork_refuse_work_in_the_child_and_new_ones_work(kafka_bootstrap: str) -> None:
    out = run_child(
        """
        import os
        producer = log.producer()
        producer.send(topic, b"parent", partition=0)
        consumer = log.consumer("fork-" + uuid.uuid4().hex[:8], [topic], session_timeout_ms=6000)
        consumer.poll(0.1)
        pid = os.fork()
        if pid == 0:  # the child: the parent's clients have no threads here
            code = 1
            try:
                try:
                    producer.produce(topic, b"child")
                except ProducerError as exc:
                    print("child producer:", exc, flush=True)
                try:
                    consumer.poll(0.1)
                except LogError as exc:
                    print("child consumer:", exc, flush=True)
                producer.close()
                consumer.close()  # both return: nothing of theirs to release here
                assert topic in log.list_topics()  # the log itself works: a new admin client
                with log.producer() as fresh:
                    print("child sent at offset", fresh.send(topic, b"child", partition=0).offset, flush=True)
                code = 0
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        producer.send(topic, b"parent again")  # the parent's clients are untouched
        consumer.close()
        producer.close()
        """,
        kafka_bootstrap,
    )
    assert "child producer: this producer was opened before this process forked" in out
    assert "child consumer: this consumer was opened before this process forked" in out
    assert "child sent at offset 1" in out
