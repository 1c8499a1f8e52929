"""A Kafka cluster that is down is reported in a few clear lines, not in librdkafka's retries; and when it
comes back, clients carry on (and say so)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError

from kawa.config import KawaConfig
from kawa.errors import BackendUnavailable
from kawa.log import TopicSpec, open_log
from kawa.log.kafka import KafkaLog
from kawa.log.kafka.quiet import ClusterHealth
from tests.log.conftest import unique


class Lines(logging.Handler):
    """The records Kawa's Kafka backend logs at INFO and above."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in list(self.records)]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("kawa.log.kafka")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g}s"
        time.sleep(0.05)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REFUSED = "[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"


def test_an_outage_is_one_line_then_a_summary_per_period_then_one_line_when_it_ends(lines: Lines) -> None:
    clock = Clock()
    health = ClusterHealth("127.0.0.1:1", summary_s=30, clock=clock)
    for i in range(100):  # 20 a second for 5 s, from two clients, as log lines and error callbacks
        clock.now += 0.05
        health.logger.log(logging.ERROR, "%s [%s] %s", "FAIL", f"rdkafka#producer-{i % 2}", REFUSED)
        health.on_error(f"producer-{i % 2}", KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert health.events == 200
    assert lines.messages() == [
        "Kafka at 127.0.0.1:1 is not reachable (Connect to ipv4#127.0.0.1:1 failed: Connection refused); producers "
        "keep records queued for up to message.timeout.ms (30 s by default) and consumers wait; start the broker "
        "or fix log.uri"
    ]
    clock.now += 26  # 31 s after the first error
    health.on_error("producer-0", KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert len(lines.messages()) == 2
    assert lines.messages()[1] == (
        "Kafka at 127.0.0.1:1 is still not reachable after 31 s (200 connection errors from 4 client(s) since the "
        "last report); start the broker or fix log.uri"
    )
    clock.now += 4
    health.reachable()
    health.reachable()  # said once
    assert lines.messages()[2:] == ["Kafka at 127.0.0.1:1 is reachable again (it was not for 35 s)"]
    clock.now += 60
    health.on_error("producer-0", KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert "is not reachable" in lines.messages()[3], "a new outage is announced again"


def test_an_outage_that_ended_unnoticed_is_not_reported_as_still_going(lines: Lines) -> None:
    clock = Clock()
    health = ClusterHealth("b:9092", summary_s=30, clock=clock)
    health.on_error("consumer-1", KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    clock.now += 3600  # no error for an hour, and no client said it got an answer
    health.on_error("consumer-1", KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert [m.split(" (")[0] for m in lines.messages()] == ["Kafka at b:9092 is not reachable"] * 2


def test_other_repeated_librdkafka_lines_pass_once_then_as_a_count(lines: Lines) -> None:
    clock = Clock()
    health = ClusterHealth("b:9092", summary_s=30, clock=clock)
    getpid = "Failed to acquire idempotence PID from broker b:9092/1: Broker: Coordinator load in progress: retrying"
    for _ in range(70):  # one every 0.5 s for 35 s
        clock.now += 0.5
        health.logger.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-1", getpid)
    health.logger.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-2", getpid)  # another client
    assert lines.messages() == [
        f"librdkafka GETPID [rdkafka#producer-1] {getpid}",
        f"librdkafka GETPID [rdkafka#producer-1] {getpid} (60 times in the last 30 s)",
        f"librdkafka GETPID [rdkafka#producer-2] {getpid}",
    ]
    assert all(r.levelno == logging.WARNING for r in lines.records)


def test_debug_lines_asked_for_pass_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    health = ClusterHealth("b:9092")
    with caplog.at_level(logging.DEBUG, logger="kawa.log.kafka"):
        for _ in range(5):
            health.logger.log(logging.DEBUG, "%s [%s] %s", "BROKER", "rdkafka#consumer-1", "state UP")
    assert [r.getMessage() for r in caplog.records] == ["BROKER [rdkafka#consumer-1] state UP"] * 5


# --- with real clients ---------------------------------------------------------------------------------


def _refusing_socket() -> socket.socket:
    """A socket bound to a free port that does not listen (yet): connections to it are refused."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_clients_of_a_down_cluster_log_a_few_clear_lines(lines: Lines) -> None:
    sock = _refusing_socket()
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    log = open_log(f"kafka://{address}", KawaConfig(), timeout_s=1)
    assert isinstance(log, KafkaLog)
    producer = log.producer()
    try:
        with pytest.raises(BackendUnavailable, match=r"start the broker or fix log\.uri"):
            log.list_topics()
        # librdkafka retries (each producer and admin connection, as log lines and error callbacks)
        wait_for(lambda: log.health.events >= 15, "15 librdkafka connection errors")
        ours = [m for m in lines.messages() if address in m]
        assert 1 <= len(lines.messages()) <= 3, lines.messages()
        assert ours and ours[0].startswith(f"Kafka at {address} is not reachable (Connect to")
        assert "start the broker or fix log.uri" in ours[0]
        assert not any("Connection refused" in m and not m.startswith("Kafka at") for m in lines.messages())
    finally:
        producer.close()
        sock.close()


class Proxy:
    """A TCP forwarder from ``sock`` to the real broker, started on demand: "a broker appears"."""

    def __init__(self, sock: socket.socket, upstream: str) -> None:
        self.sock = sock
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.conns: list[socket.socket] = []
        self.stopped = False

    def start(self) -> None:
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self.stopped = True
        for s in [self.sock, *self.conns]:
            with contextlib.suppress(OSError):
                s.close()


@pytest.mark.kafka
@pytest.mark.timeout(180)
def test_when_the_broker_appears_clients_work_and_it_is_said_once(kafka_bootstrap: str, lines: Lines) -> None:
    shared = open_log(f"kafka://{kafka_bootstrap}", KawaConfig())
    topic = unique("quiet")
    shared.create_topic(TopicSpec(topic, 1))
    proxy = Proxy(_refusing_socket(), kafka_bootstrap)
    address = f"127.0.0.1:{proxy.sock.getsockname()[1]}"
    log = open_log(f"kafka://{address}", KawaConfig(), timeout_s=10)
    assert isinstance(log, KafkaLog)
    producer = log.producer()
    try:
        wait_for(lambda: log.health.down_since is not None, "the producer noticing that Kafka is down")
        proxy.start()
        metadata = producer.send(topic, b"after the outage")
        assert metadata.offset == 0
        consumer = log.consumer(unique("g"), [topic], session_timeout_ms=6000)
        records: list[bytes | None] = []
        deadline = time.monotonic() + 60
        while not records:
            assert time.monotonic() < deadline, "the consumer read nothing"
            records += [r.value for r in consumer.poll(0.2)]
        consumer.close()
        assert records == [b"after the outage"]
        ours = [m for m in lines.messages() if m.startswith(f"Kafka at {address}")]
        assert ours[0].startswith(f"Kafka at {address} is not reachable")
        assert ours[-1].startswith(f"Kafka at {address} is reachable again")
        assert len(ours) <= 4, ours  # down, at most two summaries on a slow machine, back
    finally:
        producer.close()
        proxy.stop()
        shared.delete_topic(topic)
