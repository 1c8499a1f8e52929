"""``EventRef``: the one identity of an event — its CloudEvent ``source`` + ``id``.

CloudEvent ids are unique only per source, so neither alone names an event. Dedupe state, result rows,
prediction records, decisions and outcome joins all carry an :class:`EventRef`, in one of three forms:

- :meth:`EventRef.key` — ``source\\x1fid`` (unit separator), the key of the dedupe store; it is the key the
  store has always used, so existing dedupe state needs no migration;
- :meth:`EventRef.to_json` — ``{"source": ..., "id": ...}`` inside event data;
- two columns or fields ``event_source`` + ``event_id`` in tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kawa.errors import EventError

if TYPE_CHECKING:
    from kawa.events.cloudevents import CloudEvent

__all__ = ["EventRef"]

_SEP = "\x1f"


@dataclass(frozen=True, order=True)
class EventRef:
    """The identity of one event: equal refs name the same event, whatever carried it."""

    source: str
    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not isinstance(self.id, str) or not self.source or not self.id:
            raise EventError("an event reference needs a non-empty source and id (the CloudEvent attributes)")

    @classmethod
    def of(cls, event: CloudEvent) -> EventRef:
        """The ref of a CloudEvent."""
        return cls(str(event.get_source()), str(event.get_id()))

    def key(self) -> str:
        """The canonical string ``source\\x1fid`` (the dedupe key); :meth:`parse` reads it back."""
        return f"{self.source}{_SEP}{self.id}"

    @classmethod
    def parse(cls, key: str) -> EventRef:
        """The ref a :meth:`key` string names."""
        source, sep, id = key.partition(_SEP)
        if not sep:
            raise EventError(
                "not an event key: it has no unit separator between source and id; build keys with EventRef.key()"
            )
        return cls(source, id)

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "id": self.id}

    @classmethod
    def from_json(cls, data: Any) -> EventRef:
        """The ref of ``{"source": ..., "id": ...}``."""
        if not isinstance(data, Mapping) or not all(isinstance(data.get(k), str) for k in ("source", "id")):
            raise EventError('an event reference is an object {"source": "...", "id": "..."} with two strings')
        return cls(data["source"], data["id"])

    @classmethod
    def find(cls, data: Mapping[str, Any]) -> EventRef | None:
        """The ref a record carries, in any of its forms: ``event: {"source", "id"}`` or ``event_source`` +
        ``event_id``; None when it carries none (older records with an ``event_id`` alone name no event)."""
        nested = data.get("event")
        if isinstance(nested, Mapping):
            try:
                return cls.from_json(nested)
            except EventError:
                return None
        source, id = data.get("event_source"), data.get("event_id")
        if isinstance(source, str) and source and isinstance(id, str) and id:
            return cls(source, id)
        return None
