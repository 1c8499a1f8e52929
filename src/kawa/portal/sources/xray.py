"""The X-ray board's data: pipeline counts from the buckets and dead-letter topics, the newest objects of
each bucket, and live results (risk, label, model version, latency) from the results topic.

The app's settings come from ``platform.extras["xray"]`` (set by ``kawa demo xray``: an
:class:`~kawa.apps.xray.settings.XraySettings` or an object with a ``settings`` attribute); without them,
the default settings are used once the default incoming bucket exists (a home where the demo ran).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kawa.errors import KawaError, NotConfigured, TopicNotFound
from kawa.portal.sources.distinct import DistinctEvents
from kawa.portal.sources.log import private_group, total_records
from kawa.portal.sources.results import ResultRow, ResultsTail
from kawa.portal.sources.store import BucketView

if TYPE_CHECKING:
    from kawa.apps.xray.settings import XraySettings
    from kawa.portal.runtime import Portal

LIST_EVERY_S = 0.5  # the sampler's own ticks re-list the buckets at most this often (and ~5% of a core)
NO_XRAY = (
    "the X-ray app is not running here: start it with `kawa demo xray` (it serves this portal) — the board "
    "fills in as soon as its buckets exist"
)


@dataclass
class BoardState:
    """The latest board numbers (replaced as a whole by each refresh)."""

    counts: dict[str, int] = field(default_factory=dict)
    newest: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    refreshed_at: float = 0.0


class XraySource:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self._tail: ResultsTail | None = None
        self._state = BoardState()
        self._dlq_seen: int | None = None
        self._dlq: dict[str, DistinctEvents] = {}
        self._listed: dict[str, BucketView] = {}
        self._listed_names: dict[str, str] = {}
        self._list_next_at = 0.0
        self._lock = threading.Lock()  # guards _state
        self._refresh_lock = threading.Lock()
        self._default: tuple[float, XraySettings | None] = (0.0, None)

    # --- settings ----------------------------------------------------------------------------------

    def settings(self) -> XraySettings | None:
        extra = self.portal.platform.extras.get("xray")
        if extra is not None:
            settings = getattr(extra, "settings", extra)
            return settings  # type: ignore[no-any-return]
        checked_at, cached = self._default
        if time.monotonic() - checked_at < 5.0:
            return cached
        found: XraySettings | None = None
        try:
            from kawa.apps.xray.settings import XraySettings

            defaults = XraySettings()
            ok, _reason = self.portal.store.available()
            if ok and self.portal.store.store.bucket_exists(defaults.incoming_bucket):
                found = defaults
        except (ImportError, KawaError):
            found = None
        self._default = (time.monotonic(), found)
        return found

    def available(self) -> tuple[bool, str | None]:
        return (True, None) if self.settings() is not None else (False, NO_XRAY)

    def require(self) -> XraySettings:
        settings = self.settings()
        if settings is None:
            raise NotConfigured(NO_XRAY)
        return settings

    # --- refresh (sampler thread) ------------------------------------------------------------------

    def refresh(self, fresh: bool = True) -> None:
        """Take a new board state. The counts are one snapshot, read downstream first (dead letters,
        anonymized, processed, then uploaded), so a stage never shows more than the stage before it had;
        bucket listings are re-taken only when ``fresh`` or when due (at most ~5% of a core). One refresh
        at a time: a slow one cannot overwrite a newer one's state."""
        with self._refresh_lock:
            self._refresh(fresh)

    def _refresh(self, fresh: bool) -> None:
        settings = self.settings()
        if settings is None:
            return
        tail = self._tail
        if tail is None or tail.topic != settings.results_topic:
            if tail is not None:
                tail.close()
            group = private_group("kawa.portal.results")
            from kawa.apps.xray.events import XrayAssessed  # the app's result schema (its board passes it, #12)

            log = self.portal.platform.log
            tail = self._tail = ResultsTail(log, settings.results_topic, group, schema=XrayAssessed)
        tail.poll()
        state = BoardState(refreshed_at=time.time())
        dlq_topics = tuple(dict.fromkeys((settings.dead_letter_topic, settings.deid_dead_letter_topic)))
        dead_lettered = self._distinct_dead_letters(dlq_topics)
        names = {
            "anonymized": settings.anonymized_bucket,
            "processed": settings.processed_bucket,
            "uploaded": settings.incoming_bucket,
        }
        views = self._listings(names, fresh)
        for label in ("uploaded", "processed", "anonymized"):
            view = views.get(label)
            state.counts[label] = view.count if view is not None else 0
            state.newest[label] = [
                {
                    "bucket": names[label],
                    "key": info.key,
                    "size": info.size,
                    "time": info.last_modified.timestamp() if info.last_modified else None,
                    "content_type": info.content_type,
                }
                for info in (view.newest if view is not None else ())
            ]
        # Read downstream first, so these hold already; the clamp keeps it so should an incoming object be
        # deleted after it was processed.
        for label in ("processed", "anonymized"):
            state.counts[label] = min(state.counts[label], state.counts["uploaded"])
        state.counts["dead_lettered"] = dead_lettered
        held = 0
        for topic in dlq_topics:
            try:
                held += total_records(self.portal.log.describe(topic))
            except TopicNotFound:
                continue
        if held != self._dlq_seen:
            state.dead_letters = self._recent_dead_letters(settings)
            self._dlq_seen = held
        else:
            state.dead_letters = self._state.dead_letters
        with self._lock:
            self._state = state

    def _distinct_dead_letters(self, topics: tuple[str, ...]) -> int:
        for stale in set(self._dlq) - set(topics):
            self._dlq.pop(stale).close()
        total = 0
        for topic in topics:
            counter = self._dlq.get(topic)
            if counter is None:
                counter = self._dlq[topic] = DistinctEvents(
                    self.portal.platform.log, topic, private_group("kawa.portal.deadletters")
                )
            counter.poll()
            total += counter.count
        return total

    def _listings(self, names: dict[str, str], fresh: bool) -> dict[str, BucketView]:
        """The three buckets listed together (in ``names``' order), or the last listing while not due."""
        ok, _ = self.portal.store.available()
        if not ok:
            return {}
        now = time.monotonic()
        if not fresh and now < self._list_next_at and self._listed_names == names:
            return self._listed
        started = time.monotonic()
        views = {label: self.portal.store.view(bucket, fresh=True) for label, bucket in names.items()}
        cost = time.monotonic() - started
        self._listed, self._listed_names = views, dict(names)
        self._list_next_at = time.monotonic() + max(LIST_EVERY_S, 20 * cost)
        return views

    def _recent_dead_letters(self, settings: XraySettings, limit: int = 10) -> list[dict[str, Any]]:
        from kawa.portal.sources.deadletters import describe_dead_letter

        rows: list[dict[str, Any]] = []
        for topic in dict.fromkeys((settings.dead_letter_topic, settings.deid_dead_letter_topic)):
            try:
                records = self.portal.log.read(topic, limit=limit)
            except (TopicNotFound, KawaError):
                continue
            rows.extend(describe_dead_letter(r).summary() for r in records)
        rows.sort(key=lambda r: r["time"] or 0, reverse=True)
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:  # a redelivered dead letter is listed once (its newest delivery)
            unique.setdefault(row["event_id"] or f"{row['topic']}/{row['partition']}/{row['offset']}", row)
        return list(unique.values())[:limit]

    # --- reading -----------------------------------------------------------------------------------

    def state(self) -> BoardState:
        with self._lock:
            return self._state

    def results(self, limit: int = 50) -> list[ResultRow]:
        return self._tail.rows(limit) if self._tail is not None else []

    def tail(self) -> ResultsTail | None:
        return self._tail

    def close(self) -> None:
        with self._refresh_lock:
            if self._tail is not None:
                self._tail.close()
                self._tail = None
            for counter in self._dlq.values():
                counter.close()
            self._dlq.clear()
