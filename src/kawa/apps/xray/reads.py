"""Simulated radiologist reads: the delayed truth about uploaded images, as outcome events.

The generator knows whether each image shows pneumonia (:class:`~kawa.apps.xray.generator.Upload`). A
radiologist reads a share of the images (``reads_coverage``) some time after the upload (``reads_delay_s``,
drawn uniformly in ``delay * (1 ± reads_jitter)``); each read becomes a ``kawa.monitor.outcome`` on the
outcomes topic, which the outcome joiner links to the image's decision record.

- :func:`plan_read` decides, for one upload, whether it is read and when. The draw is a hash of the seed and
  the object key, so it is the same whatever order the uploads are planned in, in every process.
- :func:`due` splits planned reads into the ones due at a time and the ones still waiting.
- :func:`outcome_of` is the outcome event of a read: by the EventRef of the decision's event when it is
  known (:func:`refs_from_results` recovers it from the app's result events), else by entity (``bucket/key``,
  as the app's decision records name the image) at the time of the read. A join by entity counts a decision
  made up to ``horizon`` seconds before the read, so give it a horizon of at least ``delay * (1 + jitter)``.
- :class:`RadiologistReads` is the only part that does I/O: it holds the planned reads and publishes the due
  ones to the outcomes topic.

Each read's outcome id is derived from the image, so a read published twice (a restart) counts once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kawa.apps.xray.events import ASSESSED_TYPE, image_entity
from kawa.events.ref import EventRef
from kawa.monitor.records import OUTCOMES_TOPIC, OutcomeEvent

if TYPE_CHECKING:
    from kawa.apps.xray.generator import Upload
    from kawa.apps.xray.settings import XraySettings
    from kawa.events.cloudevents import CloudEvent
    from kawa.log.base import EventLog

__all__ = [
    "READS_SOURCE",
    "RadiologistReads",
    "Read",
    "due",
    "outcome_of",
    "plan_read",
    "plan_reads",
    "refs_from_results",
]

READS_SOURCE = "kawa://xray/radiologist"


@dataclass(frozen=True)
class Read:
    """A planned read of one image: its entity key, the truth (1 = pneumonia), when it was uploaded and when
    the radiologist's read is known."""

    entity: str
    label: int
    uploaded_at: float
    due_at: float

    @property
    def delay(self) -> float:
        return self.due_at - self.uploaded_at


def _unit(seed: int, key: str, what: str) -> float:
    """A uniform number in [0, 1) from ``seed``, ``key`` and ``what`` (53 bits of a SHA-256)."""
    digest = hashlib.sha256(f"{seed}\x1f{what}\x1f{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def plan_read(
    upload: Upload, *, delay_s: float, coverage: float, jitter: float = 0.0, seed: int = 0, bucket: str = ""
) -> Read | None:
    """The read of ``upload`` — None when the radiologist does not read it (a share ``1 - coverage``) or when
    the upload was damaged (the pipeline dead-letters it: there is no decision to read against). ``bucket``
    names the upload's bucket when the upload does not (a folder upload)."""
    if upload.corrupt:
        return None
    entity = image_entity(upload.bucket or bucket, upload.key)
    if _unit(seed, entity, "read") >= coverage:
        return None
    delay = delay_s * (1.0 + jitter * (2.0 * _unit(seed, entity, "delay") - 1.0))
    return Read(entity, int(upload.pneumonia), upload.put_time, upload.put_time + delay)


def plan_reads(uploads: Iterable[Upload], settings: XraySettings, *, seed: int | None = None) -> list[Read]:
    """The reads of ``uploads`` with the settings' delay, jitter and coverage (seed: ``settings.seed``)."""
    planned = (
        plan_read(
            u,
            delay_s=settings.reads_delay_s,
            coverage=settings.reads_coverage,
            jitter=settings.reads_jitter,
            seed=settings.seed if seed is None else seed,
            bucket=settings.incoming_bucket,
        )
        for u in uploads
    )
    return [r for r in planned if r is not None]


def due(reads: Iterable[Read], now: float) -> tuple[list[Read], list[Read]]:
    """``(ready, waiting)``: the reads due at ``now`` (in due order) and the others (in their order)."""
    ready: list[Read] = []
    waiting: list[Read] = []
    for read in reads:
        (ready if read.due_at <= now else waiting).append(read)
    ready.sort(key=lambda r: (r.due_at, r.entity))
    return ready, waiting


def outcome_of(read: Read, ref: EventRef | None = None) -> OutcomeEvent:
    """The outcome event of ``read``: for the decision on event ``ref`` when given, else for the entity at the
    read's time. Observed at the read's due time; its id is derived from the image."""
    oid = f"radiologist-read:{read.entity}"
    if ref is not None:
        return OutcomeEvent(observed_at=read.due_at, ref=ref, label=read.label, id=oid)
    return OutcomeEvent(observed_at=read.due_at, entity=read.entity, label=read.label, id=oid)


def refs_from_results(events: Iterable[CloudEvent | Mapping[str, Any]]) -> dict[str, EventRef]:
    """``entity → EventRef`` of the upload notifications, from the app's result events (or their data):
    each ``dev.kawa.xray.assessed`` names the event it answered. Other events, and results without an
    EventRef, are skipped."""
    out: dict[str, EventRef] = {}
    for event in events:
        if isinstance(event, Mapping):
            data: Any = event
        else:
            if str(event.get_type()) != ASSESSED_TYPE:
                continue
            data = event.get_data()
        if not isinstance(data, Mapping) or "bucket" not in data or "key" not in data:
            continue
        ref = EventRef.find(data)
        if ref is not None:
            out[image_entity(str(data["bucket"]), str(data["key"]))] = ref
    return out


class RadiologistReads:
    """Publishes the reads of uploaded images to ``topic`` (default: the outcomes topic) when they fall due.

    Hand it each upload with :meth:`add` (the generator's ``on_upload`` hook), and optionally the EventRefs of
    the assessed images with :meth:`link`; :meth:`tick` publishes what is due (its outcome by EventRef when
    linked, else by entity), :meth:`run` ticks until stopped. ``clock`` gives the current time (epoch s)."""

    def __init__(
        self,
        log: EventLog,
        settings: XraySettings,
        *,
        topic: str = OUTCOMES_TOPIC,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from kawa.log.base import TopicSpec

        self.settings = settings
        self.topic = topic
        self.seed = settings.seed if seed is None else seed
        self.clock = clock
        log.create_topic(TopicSpec(topic), exist_ok=True)
        self._producer = log.producer()
        self._lock = threading.Lock()
        self._waiting: list[Read] = []
        self._refs: dict[str, EventRef] = {}
        self.planned = 0
        self.published = 0

    def add(self, upload: Upload) -> Read | None:
        """Plan the read of ``upload``; the read, or None when it will not be read."""
        read = plan_reads([upload], self.settings, seed=self.seed)
        if not read:
            return None
        with self._lock:
            self._waiting.append(read[0])
            self.planned += 1
        return read[0]

    def link(self, refs: Mapping[str, EventRef]) -> None:
        """Name the decisions' events (``entity → EventRef``, see :func:`refs_from_results`)."""
        with self._lock:
            self._refs.update(refs)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def tick(self, now: float | None = None) -> list[OutcomeEvent]:
        """Publish the reads due at ``now`` (default: the clock) and wait for the log to take them."""
        from kawa.monitor.outcomes import publish

        with self._lock:
            ready, self._waiting = due(self._waiting, self.clock() if now is None else now)
            refs = dict(self._refs)
        sent: list[OutcomeEvent] = []
        try:
            for read in ready:
                outcome = outcome_of(read, refs.get(read.entity))
                publish(self._producer, self.topic, outcome.to_event(READS_SOURCE, id=outcome.id))
                sent.append(outcome)
        finally:
            with self._lock:  # what was not published waits for the next tick
                self._waiting.extend(ready[len(sent) :])
                self.published += len(sent)
        return sent

    def run(self, stop: threading.Event, *, interval_s: float = 1.0) -> None:
        """Tick until ``stop`` is set, every ``interval_s`` seconds."""
        while not stop.is_set():
            self.tick()
            stop.wait(interval_s)

    def close(self) -> None:
        self._producer.close()
