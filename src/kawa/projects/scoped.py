"""The log and store APIs as one user may use them: every call checked against (user, project, action).

``scoped(backends, scope)`` gives a :class:`~kawa.backends.Backends` whose ``store`` and ``log`` check each call
with :class:`~kawa.projects.scope.Scope` (the portal's rules, the one permission map) and raise
:class:`~kawa.errors.PermissionDenied` in Kawa's words; listings leave out what the user may not see, so another
team's buckets and topics are not even named. The ``kawa`` CLI's store and log commands go through it, as the
user ``KAWA_USER`` names (:func:`cli_scope`); a notebook or app of one team may too::

    from kawa.projects.scoped import scoped, scope_for
    backends = scoped(open_backends(config), scope_for(config, "mia"))

In the embedded shape this is the same check the portal makes, not a wall: whoever holds the Kawa home's files
reads them. The distributed shape's wall is the rendered Kafka ACLs and bucket policies (``kawa projects render``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kawa.errors import PermissionDenied
from kawa.projects.scope import Kind, Op, Scope

if TYPE_CHECKING:
    from kawa.backends import Backends
    from kawa.config import KawaConfig
    from kawa.log.base import Consumer, EventLog, PartitionLag, Producer, RecordMetadata, TopicInfo, TopicSpec
    from kawa.store.base import Body, BucketInfo, ObjectInfo, ObjectPage, ObjectReader, ObjectStore
    from kawa.store.rules import NotificationRule

__all__ = ["ScopedBackends", "ScopedLog", "ScopedStore", "cli_scope", "scope_for", "scoped"]


def _check(scope: Scope, kind: Kind, name: str, op: Op) -> None:
    refusal = scope.refusal(kind, name, op)
    if refusal is not None:
        raise PermissionDenied(refusal)


class ScopedStore:
    """An object store as ``scope``'s user may use it."""

    def __init__(self, inner: ObjectStore, scope: Scope) -> None:
        self.inner, self.scope, self.uri = inner, scope, inner.uri

    def _may(self, bucket: str, op: Op) -> None:
        _check(self.scope, Kind.BUCKET, bucket, op)

    def create_bucket(self, name: str, *, exist_ok: bool = False) -> None:
        self._may(name, Op.WRITE)
        self.inner.create_bucket(name, exist_ok=exist_ok)

    def list_buckets(self) -> list[BucketInfo]:
        return [b for b in self.inner.list_buckets() if self.scope.allows(Kind.BUCKET, b.name, Op.LIST)]

    def bucket_exists(self, name: str) -> bool:
        return self.scope.allows(Kind.BUCKET, name, Op.LIST) and self.inner.bucket_exists(name)

    def delete_bucket(self, name: str) -> None:
        self._may(name, Op.WRITE)
        self.inner.delete_bucket(name)

    def put(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        self._may(bucket, Op.WRITE)
        return self.inner.put(bucket, key, body, content_type=content_type, metadata=metadata, tags=tags)

    def get(self, bucket: str, key: str) -> ObjectReader:
        self._may(bucket, Op.READ)
        return self.inner.get(bucket, key)

    def head(self, bucket: str, key: str) -> ObjectInfo:
        self._may(bucket, Op.READ)
        return self.inner.head(bucket, key)

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        self._may(bucket, Op.READ)
        return self.inner.tags(bucket, key)

    def list_objects(self, bucket: str, *, prefix: str = "", start_after: str | None = None,
                     continuation_token: str | None = None, max_keys: int = 1000) -> ObjectPage:  # fmt: skip
        self._may(bucket, Op.READ)
        return self.inner.list_objects(bucket, prefix=prefix, start_after=start_after,
                                       continuation_token=continuation_token, max_keys=max_keys)  # fmt: skip

    def delete(self, bucket: str, key: str, *, missing_ok: bool = False) -> None:
        self._may(bucket, Op.WRITE)
        self.inner.delete(bucket, key, missing_ok=missing_ok)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
             metadata: Mapping[str, str] | None = None) -> ObjectInfo:  # fmt: skip
        self._may(src_bucket, Op.READ)
        self._may(dst_bucket, Op.WRITE)
        return self.inner.copy(src_bucket, src_key, dst_bucket, dst_key, metadata=metadata)

    def add_notification(self, rule: NotificationRule) -> NotificationRule:
        self._may(rule.bucket, Op.WRITE)
        _check(self.scope, Kind.TOPIC, rule.topic, Op.WRITE)  # the rule produces to its topic
        return self.inner.add_notification(rule)

    def notifications(self, bucket: str) -> list[NotificationRule]:
        self._may(bucket, Op.LIST)
        return self.inner.notifications(bucket)

    def remove_notification(self, bucket: str, rule_id: str) -> None:
        self._may(bucket, Op.WRITE)
        self.inner.remove_notification(bucket, rule_id)

    def close(self) -> None:
        """The store is the backends' to close."""


class _ScopedProducer:
    def __init__(self, inner: Producer, scope: Scope) -> None:
        self.inner, self.scope = inner, scope

    def produce(self, topic: str, value: bytes | None, **kwargs: Any) -> None:
        _check(self.scope, Kind.TOPIC, topic, Op.WRITE)
        self.inner.produce(topic, value, **kwargs)

    def send(self, topic: str, value: bytes | None, **kwargs: Any) -> RecordMetadata:
        _check(self.scope, Kind.TOPIC, topic, Op.WRITE)
        return self.inner.send(topic, value, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        self.inner.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self.inner.close(timeout)


class ScopedLog:
    """An event log as ``scope``'s user may use it (``owns``: closing it closes ``inner``)."""

    def __init__(self, inner: EventLog, scope: Scope, *, owns: bool = False) -> None:
        self.inner, self.scope, self.uri, self._owns = inner, scope, inner.uri, owns

    def _may(self, topic: str, op: Op) -> None:
        _check(self.scope, Kind.TOPIC, topic, op)

    def create_topic(self, spec: TopicSpec, *, exist_ok: bool = False) -> None:
        self._may(spec.name, Op.WRITE)
        self.inner.create_topic(spec, exist_ok=exist_ok)

    def list_topics(self) -> list[str]:
        return [t for t in self.inner.list_topics() if self.scope.allows(Kind.TOPIC, t, Op.LIST)]

    def describe_topic(self, name: str) -> TopicInfo:
        self._may(name, Op.LIST)
        return self.inner.describe_topic(name)

    def delete_topic(self, name: str) -> None:
        self._may(name, Op.WRITE)
        self.inner.delete_topic(name)

    def producer(self, *, max_record_bytes: int | None = None) -> Producer:
        return _ScopedProducer(self.inner.producer(max_record_bytes=max_record_bytes), self.scope)  # type: ignore[return-value]

    def consumer(self, group: str, topics: Sequence[str], **kwargs: Any) -> Consumer:
        for topic in topics:
            self._may(topic, Op.READ)  # records may carry PHI
        return self.inner.consumer(group, topics, **kwargs)

    def lag(self, group: str, topics: Sequence[str] | None = None) -> list[PartitionLag]:
        for topic in topics or ():
            self._may(topic, Op.LIST)
        found = self.inner.lag(group, topics)
        return [p for p in found if self.scope.allows(Kind.TOPIC, p.topic, Op.LIST)]

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        self._may(topic, Op.LIST)
        return self.inner.offsets_for_time(topic, timestamp_ms)

    def close(self) -> None:
        """Closes ``inner`` when this log owns it; else it is the backends' to close."""
        if self._owns:
            self.inner.close()


class ScopedBackends:
    """``backends`` with a scoped ``log`` and ``store``; closing closes the backends."""

    def __init__(self, backends: Backends, scope: Scope) -> None:
        self.backends, self.scope = backends, scope
        self._log: ScopedLog | None = None
        self._store: ScopedStore | None = None

    @property
    def config(self) -> KawaConfig:
        return self.backends.config

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = ScopedLog(self.backends.log, self.scope)
        return self._log  # type: ignore[return-value]

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = ScopedStore(self.backends.store, self.scope)
        return self._store  # type: ignore[return-value]

    def close(self) -> None:
        self.backends.close()

    def __enter__(self) -> ScopedBackends:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scoped(backends: Backends, scope: Scope) -> ScopedBackends:
    return ScopedBackends(backends, scope)


def _phi_free(config: KawaConfig, projects: Iterable[Any]) -> frozenset[str]:
    """Buckets declared PHI-free: ``portal.phi_free_buckets``, and each project template's ``phi_free`` ones."""
    from kawa.errors import UnknownTemplate
    from kawa.projects.core import s3_bucket
    from kawa.projects.templates import get_template

    names = set(config.portal.phi_free_buckets)
    for project in projects:
        try:
            names.update(s3_bucket(project.name, b) for b in get_template(project.template).phi_free)
        except UnknownTemplate:
            continue
    return frozenset(names)


def scope_for(config: KawaConfig, user: str, global_role: Any = None, *, platform_admin: bool = False) -> Scope:
    """The scope of ``user`` in this home: their roles in the registry's projects, ``global_role`` in ``default``."""
    from kawa.projects.core import User
    from kawa.projects.registry import ProjectRegistry

    projects = ProjectRegistry.in_home(config.home).list()
    who = User(user, global_role=global_role, platform_admin=platform_admin)
    return Scope(who, {p.name: p for p in projects}, _phi_free(config, projects))


def cli_scope(config: KawaConfig, user: str | None) -> Scope:
    """The scope the shell acts in. With no user named (``KAWA_USER`` unset), the shell that holds the home is its
    owner and may do everything: single-user use is unchanged. A named user acts with their roles in the
    registry's projects and, in ``default``, their portal user's global role (a portal admin is a platform admin;
    a name that is no portal user, or a disabled one, has no role there)."""
    from kawa.errors import UserNotFound
    from kawa.portal.permissions import Role
    from kawa.portal.security import users_db_path

    if user is None:
        return scope_for(config, "owner", platform_admin=True)
    path = users_db_path(config)
    role = None
    if path.exists():
        from kawa.portal.users import UserStore

        users = UserStore(path)
        try:
            found = users.get_user(user)
            role = None if found.disabled else found.role
        except UserNotFound:
            role = None
        finally:
            users.close()
    return scope_for(config, user, role, platform_admin=role is Role.ADMIN)
