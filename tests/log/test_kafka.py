"""What is particular to the Kafka backend: URIs, an unreachable broker, settings passed through to
librdkafka, topic settings, delivery reports. The shared behaviour is in ``test_contract.py``."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from kawa.config import KafkaClientConfig, KawaConfig, LogConfig
from kawa.errors import BackendUnavailable, ConfigError, LogError, ProducerError
from kawa.log import RecordMetadata, TopicSpec, open_log
from kawa.log.kafka import KafkaLog, parse_bootstrap
from tests.log.conftest import unique

pytestmark = [pytest.mark.timeout(120), pytest.mark.kafka]


@pytest.fixture
def kafka(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    log = open_log(f"kafka://{kafka_bootstrap}", KawaConfig())
    assert isinstance(log, KafkaLog)
    made: list[str] = []
    log.made = made  # type: ignore[attr-defined]
    yield log
    for name in made:
        log.delete_topic(name)


def new_topic(log: KafkaLog, partitions: int = 1, **spec: object) -> str:
    name = unique("k")
    log.create_topic(TopicSpec(name, partitions, **spec))  # type: ignore[arg-type]
    log.made.append(name)  # type: ignore[attr-defined]
    return name


@pytest.mark.parametrize(
    ("uri", "bootstrap"),
    [
        ("kafka://127.0.0.1:19092", "127.0.0.1:19092"),
        ("kafka://a:1,b:2", "a:1,b:2"),
        ("kafka://broker", "broker:9092"),
        ("kafka://a:1, b:2/", "a:1,b:2"),
    ],
)
def test_uris_name_the_bootstrap_servers(uri: str, bootstrap: str) -> None:
    assert parse_bootstrap(uri) == bootstrap


@pytest.mark.parametrize("uri", ["kafka://", "kafka://a:b", "kafka://a:0", "kafka://a:1/topic", "kafka://:9092"])
def test_bad_uris_are_config_errors(uri: str) -> None:
    with pytest.raises(ConfigError, match="kafka://host:port"):
        open_log(uri, KawaConfig())


def test_importing_kawa_log_does_not_import_confluent_kafka() -> None:
    code = "import sys, kawa.log; assert 'confluent_kafka' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_broker_is_backend_unavailable_within_the_timeout() -> None:
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    log = open_log(f"kafka://{address}", KawaConfig(), timeout_s=1)
    started = time.monotonic()
    calls: list[Callable[[], object]] = [
        log.list_topics,
        lambda: log.create_topic(TopicSpec("t", 1)),
        lambda: log.describe_topic("t"),
        lambda: log.producer().produce("t", b"x"),
        lambda: log.consumer("g", ["t"]),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable, match=f"cannot reach Kafka at {address}.*start the broker"):
            call()
    assert time.monotonic() - started < 5 * 3  # every call gave up after about timeout_s


def test_security_settings_reach_every_client() -> None:
    kafka = KafkaClientConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="kawa",
        sasl_password="secret",  # type: ignore[arg-type]
        extra={"client.rack": "r1", "linger.ms": "20"},
    )
    log = open_log("kafka://broker:9093", KawaConfig(log=LogConfig(kafka=kafka)))
    assert isinstance(log, KafkaLog)
    conf = log.client_conf(**{"linger.ms": 5})
    assert conf["bootstrap.servers"] == "broker:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("kawa", "secret")
    assert conf["client.rack"] == "r1"
    assert conf["linger.ms"] == "20"  # what the user configured wins over the backend's defaults


def test_invalid_client_settings_are_config_errors(tmp_path: Path) -> None:
    kafka = KafkaClientConfig(security_protocol="SSL", ssl_ca_location=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match=r"log\.kafka"):
        open_log("kafka://broker:9093", KawaConfig(log=LogConfig(kafka=kafka)))


def test_topic_settings_reach_the_broker(kafka: KafkaLog, kafka_bootstrap: str) -> None:
    with_segment = KafkaLog(kafka.bootstrap, config=KawaConfig(), topic_config={"segment.ms": "12345"})
    name = unique("k")
    with_segment.create_topic(TopicSpec(name, 2, retention_ms=None, retention_bytes=1 << 30))
    kafka.made.append(name)  # type: ignore[attr-defined]
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    entries = admin.describe_configs([resource])[resource].result(10)  # type: ignore[no-untyped-call]
    assert entries["segment.ms"].value == "12345"
    assert entries["retention.ms"].value == "-1"  # None = unlimited
    assert entries["retention.bytes"].value == str(1 << 30)


def test_delivery_reports_arrive_without_a_flush(kafka: KafkaLog) -> None:
    name = new_topic(kafka, 1)
    reports: list[RecordMetadata | None] = []
    arrived = threading.Event()

    def report(metadata: RecordMetadata | None, error: Exception | None) -> None:
        reports.append(metadata)
        arrived.set()

    producer = kafka.producer()
    producer.produce(name, b"x", on_delivery=report)
    assert arrived.wait(10), "no delivery report without flush()"
    assert reports[0] is not None and reports[0].offset == 0
    producer.close()


def test_flush_raises_when_a_record_failed(kafka: KafkaLog) -> None:
    name = new_topic(kafka, 1, cleanup_policy="compact")
    errors: list[Exception | None] = []
    producer = kafka.producer()
    producer.produce(name, b"no key", on_delivery=lambda _md, error: errors.append(error))
    with pytest.raises(ProducerError, match="1 record"):
        producer.flush(30)
    assert len(errors) == 1 and isinstance(errors[0], ProducerError)
    producer.flush(5)  # a failure is reported once
    producer.close()


def test_an_eager_assignment_strategy_from_the_config_works(kafka_bootstrap: str) -> None:
    config = KawaConfig(log=LogConfig(kafka=KafkaClientConfig(extra={"partition.assignment.strategy": "range"})))
    log = open_log(f"kafka://{kafka_bootstrap}", config)
    assert isinstance(log, KafkaLog)
    name = unique("k")
    log.create_topic(TopicSpec(name, 2))
    try:
        producer = log.producer()
        for i in range(6):
            producer.produce(name, str(i).encode(), partition=i % 2)
        producer.flush(30)
        group = unique("g")
        first = log.consumer(group, [name], session_timeout_ms=6000)
        second = log.consumer(group, [name], session_timeout_ms=6000)
        deadline = time.monotonic() + 60
        seen: list[bytes | None] = []
        while not (len(first.assignment()) == 1 and len(second.assignment()) == 1):
            assert time.monotonic() < deadline, "range assignment did not split two partitions"
            seen += [r.value for r in first.poll(0.1) + second.poll(0.1)]
        everything = {str(i).encode() for i in range(6)}
        while set(seen) != everything:  # (a rebalance may deliver a record twice: at-least-once)
            assert time.monotonic() < deadline, f"read only {seen}"
            seen += [r.value for r in first.poll(0.1) + second.poll(0.1)]
        first.close()
        second.close()
        with pytest.raises(LogError, match="closed"):
            first.poll(0.1)
        producer.close()
        with pytest.raises(ProducerError, match="closed"):
            producer.produce(name, b"late")
    finally:
        log.delete_topic(name)
