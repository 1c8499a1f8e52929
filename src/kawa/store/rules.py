"""Notification rules: which changes of a bucket go to which topic, and where rules are kept."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kawa.errors import InvalidTopicSpec, NotificationError
from kawa.events.s3 import normalize_event_name
from kawa.store.naming import validate_bucket_name

KNOWN_EVENTS = frozenset(
    {
        "ObjectCreated:*",
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
        "ObjectRemoved:*",
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
    }
)
_RULE_ID = re.compile(r"^kawa-(?P<topic>[A-Za-z0-9._-]+)-[0-9a-f]{8}$")


@dataclass(frozen=True)
class NotificationRule:
    """Send ``events`` of ``bucket`` whose key passes every given filter to ``topic``.

    Filters (at most three rules, all must match, as in Ceph): ``prefix``, ``suffix`` and ``regex`` (a
    Python regular expression that must match the whole key). ``mode`` and ``target`` are filled in by
    the store: ``local``/``memory`` (Kawa publishes), ``sqs`` (target = queue URL), ``rgw`` (target = SNS
    topic ARN) or ``poll``.
    """

    bucket: str
    topic: str
    events: tuple[str, ...] = ("ObjectCreated:*",)
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    id: str = ""
    mode: str = ""
    target: str | None = None

    def __post_init__(self) -> None:
        from kawa.log.base import validate_topic_name

        validate_bucket_name(self.bucket)
        try:
            validate_topic_name(self.topic)
        except InvalidTopicSpec as exc:
            raise NotificationError(str(exc)) from None
        events = tuple(dict.fromkeys(normalize_event_name(e) for e in (self.events or ("ObjectCreated:*",))))
        for event in events:
            if event not in KNOWN_EVENTS:
                raise NotificationError(
                    f"unknown event type {event!r}; use one of {', '.join(sorted(KNOWN_EVENTS))}"
                )
        object.__setattr__(self, "events", events)
        for name in ("prefix", "suffix", "regex"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise NotificationError(f"--regex {self.regex!r} is not a valid regular expression: {exc}") from None
        if not self.id:
            digest = hashlib.sha1(
                json.dumps([self.bucket, self.events, self.prefix, self.suffix, self.regex]).encode()
            ).hexdigest()[:8]
            object.__setattr__(self, "id", f"kawa-{self.topic}-{digest}")

    def matches(self, event_name: str, key: str) -> bool:
        """Whether an event of this type on this key passes the rule's event types and filters."""
        name = normalize_event_name(event_name)
        if not any(
            name == event or (event.endswith(":*") and name.startswith(event[:-1])) for event in self.events
        ):
            return False
        if self.prefix is not None and not key.startswith(self.prefix):
            return False
        if self.suffix is not None and not key.endswith(self.suffix):
            return False
        return self.regex is None or re.fullmatch(self.regex, key) is not None

    def filter_rules(self) -> list[dict[str, str]]:
        """The filters as S3 ``FilterRules`` (``regex`` only where the server understands it: Ceph)."""
        rules = [{"Name": "prefix", "Value": self.prefix}] if self.prefix is not None else []
        if self.suffix is not None:
            rules.append({"Name": "suffix", "Value": self.suffix})
        if self.regex is not None:
            rules.append({"Name": "regex", "Value": self.regex})
        return rules

    def describe_filters(self) -> str:
        parts = [f"{r['Name']}={r['Value']}" for r in self.filter_rules()]
        return " ".join(parts) or "-"

    def with_target(self, mode: str, target: str | None = None) -> NotificationRule:
        return replace(self, mode=mode, target=target)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = list(self.events)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NotificationRule:
        return cls(**{**data, "events": tuple(data.get("events") or ())})


def topic_from_rule_id(rule_id: str) -> str | None:
    """The topic a Kawa-made rule id names (``kawa-<topic>-<hash>``), so a bridge can route without state."""
    match = _RULE_ID.match(rule_id or "")
    return match.group("topic") if match else None


class RuleRegistry:
    """Notification rules kept durably in one JSON file (or only in memory when ``path`` is None).

    Safe across processes: writers take an exclusive ``flock`` and replace the file atomically; readers
    reload it when it changed, so a running ``kawa up`` sees rules that ``kawa notify add`` wrote.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._rules: list[NotificationRule] = []
        self._stamp: tuple[int, int, int] | None = None

    def rules(self, bucket: str | None = None) -> list[NotificationRule]:
        with self._lock:
            self._reload()
            return [r for r in self._rules if bucket is None or r.bucket == bucket]

    def matching(self, bucket: str, event_name: str, key: str) -> list[NotificationRule]:
        return [r for r in self.rules(bucket) if r.matches(event_name, key)]

    def put(self, rule: NotificationRule) -> NotificationRule:
        with self._edit() as rules:
            rules[:] = [r for r in rules if not (r.bucket == rule.bucket and r.id == rule.id)] + [rule]
        return rule

    def remove(self, bucket: str, rule_id: str) -> None:
        with self._edit() as rules:
            kept = [r for r in rules if not (r.bucket == bucket and r.id == rule_id)]
            if len(kept) == len(rules):
                raise NotificationError(
                    f"bucket {bucket!r} has no notification rule {rule_id!r}; see `kawa notify list {bucket}`"
                )
            rules[:] = kept

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._rules, self._stamp = [], None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)  # replace() makes a new inode
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text() or "[]")
            self._rules = [NotificationRule.from_dict(item) for item in data]
        except (ValueError, TypeError) as exc:
            raise NotificationError(f"notification rules file {self.path} is damaged: {exc}; fix or remove it") from exc
        self._stamp = stamp

    @contextlib.contextmanager
    def _edit(self) -> Iterator[list[NotificationRule]]:
        with self._lock:
            if self.path is None:
                yield self._rules
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "a+") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                self._stamp = None
                self._reload()
                rules = list(self._rules)
                yield rules
                tmp = self.path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps([r.to_dict() for r in rules], indent=2))
                os.replace(tmp, self.path)
                self._rules, self._stamp = rules, None
