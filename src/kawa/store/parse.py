"""Ordering bucket events by ``sequencer``, and acting only on the buckets a trigger names.

Parsing notifications (every shape: Ceph, MinIO, AWS, SNS, KafkaSource) is :mod:`kawa.events.s3`; its typed
record is :class:`~kawa.events.schemas.S3Record`, which these helpers take.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kawa.errors import EventError
from kawa.events.schemas import S3Record

__all__ = ["ON_FOREIGN", "BucketScope", "SequencerTracker", "latest_per_object", "order_events", "sequencer_value"]


# --- ordering by sequencer --------------------------------------------------------------------------


def sequencer_value(sequencer: str | None) -> int:
    """A sequencer as an integer (hex; comparing ints is comparing the strings after left-padding with zeros).
    A missing or malformed sequencer is -1: older than any real one."""
    if not sequencer:
        return -1
    try:
        return int(sequencer, 16)
    except ValueError:
        return -1


def order_events(events: Iterable[S3Record]) -> list[S3Record]:
    """Events sorted so that those of one object come in sequencer order (stable otherwise)."""
    return sorted(events, key=lambda e: (e.bucket, e.key, sequencer_value(e.sequencer)))


def latest_per_object(events: Iterable[S3Record]) -> dict[tuple[str, str], S3Record]:
    """The newest event per ``(bucket, key)`` by sequencer (later arrival wins a tie)."""
    latest: dict[tuple[str, str], S3Record] = {}
    for event in events:
        current = latest.get((event.bucket, event.key))
        if current is None or sequencer_value(event.sequencer) >= sequencer_value(current.sequencer):
            latest[(event.bucket, event.key)] = event
    return latest


class SequencerTracker:
    """Remembers the highest sequencer seen per object; :meth:`accept` drops duplicates and stale events.

    Events without a sequencer are always accepted (nothing to order them by).
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def accept(self, event: S3Record) -> bool:
        value = sequencer_value(event.sequencer)
        if value < 0:
            return True
        ident = (event.bucket, event.key)
        if value <= self._seen.get(ident, -1):
            return False
        self._seen[ident] = value
        return True


# --- acting only on the buckets a trigger names ------------------------------------------------------

ON_FOREIGN = ("skip", "dead-letter")


class BucketScope:
    """The buckets a function's trigger or a route's source names. A Ceph topic may carry the notifications
    of several buckets (an output bucket among them), so a record of any other bucket is *foreign*: it is
    never processed — skipped and counted (``on_foreign="skip"``) or dead-lettered (``"dead-letter"``).

    An empty scope accepts every bucket. :meth:`note` logs why a record was skipped, at most once per
    ``log_every_s`` per bucket (a busy shared topic must not flood the log).
    """

    def __init__(self, buckets: Iterable[str] = (), on_foreign: str = "skip", *, log_every_s: float = 60.0) -> None:
        if on_foreign not in ON_FOREIGN:
            raise EventError(f"on_foreign must be 'skip' or 'dead-letter', got {on_foreign!r}")
        self.buckets = frozenset(buckets)
        self.on_foreign = on_foreign
        self.log_every_s = log_every_s
        self._logged: dict[str, float] = {}

    @property
    def dead_letters(self) -> bool:
        return self.on_foreign == "dead-letter"

    def is_foreign(self, event: S3Record) -> bool:
        return bool(self.buckets) and event.bucket not in self.buckets

    def reason(self, event: S3Record) -> str:
        """Why ``event`` is not acted on, in words fit for a log line or a dead letter (no key: keys may
        name patients)."""
        names = ", ".join(sorted(self.buckets))
        return f"the notification is for bucket {event.bucket!r}, which the trigger does not name (it names {names})"

    def note(self, logger: Any, component: str, event: S3Record) -> None:
        import time

        now = time.monotonic()
        last = self._logged.get(event.bucket)
        if last is not None and now - last < self.log_every_s:
            return
        self._logged[event.bucket] = now
        logger.info("%s: skipped a record: %s (further skips of this bucket are counted, logged at most every "
                    "%.0f s)", component, self.reason(event), self.log_every_s)
