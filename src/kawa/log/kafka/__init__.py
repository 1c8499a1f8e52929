"""The Apache Kafka backend of the event log (see ``log.py`` for its guarantees)."""

from kawa.log.kafka.consumer import KafkaConsumer
from kawa.log.kafka.log import KafkaLog, build, parse_bootstrap
from kawa.log.kafka.producer import KafkaProducer

__all__ = ["KafkaConsumer", "KafkaLog", "KafkaProducer", "build", "parse_bootstrap"]
