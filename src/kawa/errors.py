"""One error tree for Kawa.

Every error a user can meet is a :class:`KawaError`. Backends translate SDK errors (librdkafka, boto3,
sqlite, OS errors) at their boundary with ``raise ... from exc`` so callers catch one family. Messages say
what was wrong and what to do about it.
"""

from __future__ import annotations


class KawaError(Exception):
    """Root of every error Kawa raises on purpose."""


class ConfigError(KawaError):
    """The configuration (kawa.yaml, KAWA_* variables, a URI) is invalid."""


class UnknownSchemeError(ConfigError):
    """A URI names a scheme no backend is registered for."""


class BackendUnavailable(KawaError):
    """A server the backend needs (Kafka broker, S3 endpoint, ...) cannot be reached."""


# --- event log -------------------------------------------------------------------------------------


class LogError(KawaError):
    """Errors of the event log."""


class TopicNotFound(LogError):
    """The topic does not exist."""


class TopicExists(LogError):
    """The topic already exists."""


class InvalidTopicSpec(LogError):
    """Topic name, partition count, retention or cleanup policy is invalid."""


class RecordTooLarge(LogError):
    """A record is larger than the topic's or producer's record size limit."""


class InvalidPartition(LogError):
    """A partition number outside the topic's partitions."""


class CommitFailed(LogError):
    """An offset commit was refused, usually because the group rebalanced and the partition moved away."""


class OffsetOutOfRange(LogError):
    """A seek or fetch asked for an offset that the log no longer (or not yet) holds."""


class CorruptLog(LogError):
    """The on-disk log holds data that cannot be decoded and cannot be repaired automatically."""


class ProducerError(LogError):
    """A record could not be delivered."""


# --- events ----------------------------------------------------------------------------------------


class EventError(KawaError):
    """A record is not a valid CloudEvent or an event record cannot be parsed."""


# --- object store ----------------------------------------------------------------------------------


class StoreError(KawaError):
    """Errors of the object store."""


class BucketNotFound(StoreError):
    """The bucket does not exist."""


class BucketExists(StoreError):
    """The bucket already exists."""


class BucketNotEmpty(StoreError):
    """The bucket still holds objects."""


class InvalidBucketName(StoreError):
    """The bucket name breaks the S3 bucket naming rules."""


class InvalidKey(StoreError):
    """The object key is invalid or would escape its bucket."""


class ObjectNotFound(StoreError):
    """The object does not exist."""
