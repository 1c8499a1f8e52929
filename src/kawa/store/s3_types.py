"""What the S3 helpers (notification set-up, the SQS/poll bridge, error translation) need of an S3 store.

A protocol, so that :mod:`kawa.store.s3` imports the helpers and the helpers never import it back.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from kawa.store.base import ObjectStore

if TYPE_CHECKING:
    from kawa.config import KawaConfig
    from kawa.store.records import Notifier
    from kawa.store.rules import RuleRegistry


class S3Backend(ObjectStore, Protocol):
    config: KawaConfig
    endpoint: str
    client: Any
    session: Any
    registry: RuleRegistry
    notifier: Notifier

    def service_client(self, service: str) -> Any:
        """A boto3 client for another service (``sqs``, ``sns``) at the same endpoint."""
        ...

    def physical(self, bucket: str) -> str: ...

    def logical(self, physical: str) -> str: ...

    def errors(self, action: str, bucket: str | None = None, key: str | None = None) -> AbstractContextManager[None]:
        """Translate the S3 client's errors inside the block into Kawa errors."""
        ...

    def bucket_exists(self, bucket: str) -> bool: ...
