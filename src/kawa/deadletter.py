"""Dead letters: the one schema functions and routes write when they give up on a record, and its parser.

A dead letter is the original record (key, value, headers) plus a :class:`DeadLetterReason`, written twice:
as plain headers ``kawa-dlq-*`` and as CloudEvent extensions ``ce_kawadlq*`` (so the record still reads as
a CloudEvent whose extensions say what went wrong). The fields:

============================  =======================  =====================================================
plain header                  extension                meaning
============================  =======================  =====================================================
``kawa-dlq-version``          ``kawadlqversion``       schema version (``2``; records without it are ``1``)
``kawa-dlq-reason``           ``kawadlqreason``        a stable reason code (:data:`REASONS`)
``kawa-dlq-message``          ``kawadlqmessage``       what went wrong, in Kawa's words (no reprs, no content)
``kawa-dlq-attempts``         ``kawadlqattempts``      how many attempts were made (1 for permanent errors)
``kawa-dlq-kind``             ``kawadlqkind``          ``function`` or ``route``
``kawa-dlq-component``        ``kawadlqcomponent``     the function's qualified name or the route's id
``kawa-dlq-source-topic``     ``kawadlqtopic``         where the record came from (re-drive target) …
``kawa-dlq-source-partition`` ``kawadlqpartition``     … its partition …
``kawa-dlq-source-offset``    ``kawadlqoffset``        … and offset
``kawa-dlq-first-failure``    ``kawadlqfirstfailure``  ISO-8601 time of the first failed attempt
``kawa-dlq-last-failure``     ``kawadlqlastfailure``   ISO-8601 time of the last failed attempt
============================  =======================  =====================================================

:func:`read_reason` reads this schema and the version-1 headers older records carry (the function
runtime's ``kawa-error-type``/``kawa-error-message``…, the routes' ``kawaerror``/``kawaroute``…).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

SCHEMA_VERSION = 2
_E = TypeVar("_E", bound=BaseException)

UNDECODABLE = "undecodable"
INVALID_INPUT = "invalid-input"
DECOMPRESSION_BOMB = "decompression-bomb"
FOREIGN_BUCKET = "foreign-bucket"
HANDLER_ERROR = "handler-error"
TIMEOUT = "timeout"
NOT_DELIVERED = "not-delivered"
OVER_QUOTA = "over-quota"
UNKNOWN = "unknown"
REASONS = frozenset(
    {UNDECODABLE, INVALID_INPUT, DECOMPRESSION_BOMB, FOREIGN_BUCKET, HANDLER_ERROR, TIMEOUT, NOT_DELIVERED, OVER_QUOTA,
     UNKNOWN}
)
PERMANENT_REASONS = frozenset({UNDECODABLE, INVALID_INPUT, DECOMPRESSION_BOMB, FOREIGN_BUCKET, OVER_QUOTA})
"""Reasons no retry can fix: the record is dead-lettered after its first attempt."""

Kind = Literal["function", "route"]

# field → (plain header, CloudEvent extension)
FIELDS: dict[str, tuple[str, str]] = {
    "version": ("kawa-dlq-version", "kawadlqversion"),
    "reason": ("kawa-dlq-reason", "kawadlqreason"),
    "message": ("kawa-dlq-message", "kawadlqmessage"),
    "attempts": ("kawa-dlq-attempts", "kawadlqattempts"),
    "kind": ("kawa-dlq-kind", "kawadlqkind"),
    "component": ("kawa-dlq-component", "kawadlqcomponent"),
    "source_topic": ("kawa-dlq-source-topic", "kawadlqtopic"),
    "source_partition": ("kawa-dlq-source-partition", "kawadlqpartition"),
    "source_offset": ("kawa-dlq-source-offset", "kawadlqoffset"),
    "first_failure": ("kawa-dlq-first-failure", "kawadlqfirstfailure"),
    "last_failure": ("kawa-dlq-last-failure", "kawadlqlastfailure"),
}
# Version 1 (before the schema): function headers and route extensions, field → names.
LEGACY: dict[str, tuple[str, ...]] = {
    "error_type": ("kawa-error-type", "kawaerrortype"),
    "message": ("kawa-error-message", "kawaerrormessage", "kawaerror"),
    "attempts": ("kawa-attempts", "kawaattempts"),
    "function": ("kawa-function", "kawafunction"),
    "route": ("kawaroute",),
    "source_topic": ("kawa-source-topic", "kawasourcetopic"),
}
MAX_MESSAGE = 1000


def _normal(name: str) -> str:
    lowered = name.lower()
    return lowered[3:] if lowered.startswith(("ce_", "ce-")) else lowered


ALL_NAMES = frozenset(
    {_normal(n) for pair in FIELDS.values() for n in pair} | {n for names in LEGACY.values() for n in names}
)
"""Every header/extension name (without ``ce_``) of both versions: stripped before a re-drive."""


def is_reason_header(name: str) -> bool:
    """True for a dead-letter header of either version (plain, ``ce_`` or ``ce-`` form)."""
    return _normal(name) in ALL_NAMES


@dataclass(frozen=True)
class DeadLetterReason:
    """Why a record was dead-lettered. ``message`` is Kawa's own words: never a Python repr, never content."""

    reason: str
    message: str
    attempts: int
    kind: Kind
    component: str
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    first_failure: datetime | None = None
    last_failure: datetime | None = None
    version: int = SCHEMA_VERSION
    error_type: str | None = None
    """Version 1 only: the Python exception class the old runtime wrote."""

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT_REASONS

    def fields(self) -> dict[str, str]:
        values = {**self.describe(), "message": scrub(self.message)}
        return {name: str(value) for name, value in values.items() if value is not None and value != ""}

    def headers(self) -> list[tuple[str, bytes]]:
        """The reason as Kafka headers: each field as ``kawa-dlq-*`` and as ``ce_kawadlq*``."""
        out: list[tuple[str, bytes]] = []
        for name, value in self.fields().items():
            plain, extension = FIELDS[name]
            data = value.encode("utf-8", "replace")
            out.extend([(plain, data), (f"ce_{extension}", data)])
        return out

    def extensions(self) -> dict[str, str]:
        """The reason as CloudEvent extension attributes (``kawadlqreason`` …)."""
        return {FIELDS[name][1]: value for name, value in self.fields().items()}

    def describe(self) -> dict[str, Any]:
        """The reason as plain data (for APIs and ``.error.json`` files)."""
        return {
            "version": self.version,
            "reason": self.reason,
            "message": self.message,
            "attempts": self.attempts,
            "kind": self.kind,
            "component": self.component,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "first_failure": _iso(self.first_failure),
            "last_failure": _iso(self.last_failure),
        }


def with_reason(headers: Iterable[tuple[str, bytes]], reason: DeadLetterReason) -> list[tuple[str, bytes]]:
    """``headers`` without any earlier dead-letter headers (of either version), plus ``reason``'s."""
    return [(k, v) for k, v in headers if not is_reason_header(k)] + reason.headers()


def plain_headers(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """For records written as CloudEvents with ``ce_kawadlq*`` extensions: the matching ``kawa-dlq-*`` plain
    headers, so every dead letter carries both forms."""
    by_extension = {f"ce_{extension}": plain for plain, extension in FIELDS.values()}
    have = {k.lower() for k, _v in headers}
    return [(by_extension[k], v) for k, v in headers if k in by_extension and by_extension[k] not in have]


# --- reading --------------------------------------------------------------------------------------


def _lookup(headers: Sequence[tuple[str, bytes]] | Mapping[str, Any]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        if value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
        out.setdefault(_normal(str(name)), text)
    return out


def read_reason(headers: Sequence[tuple[str, bytes]] | Mapping[str, Any]) -> DeadLetterReason | None:
    """The dead-letter reason in ``headers`` (Kafka header pairs, or a mapping such as a route message's
    headers), version 2 or 1; None when the headers carry none."""
    found = _lookup(headers)
    if _normal(FIELDS["reason"][0]) in found or FIELDS["reason"][1] in found:
        def get(name: str) -> str | None:
            plain, extension = FIELDS[name]
            return found.get(_normal(plain)) or found.get(extension)

        kind = get("kind")
        return DeadLetterReason(
            reason=get("reason") or UNKNOWN,
            message=get("message") or "",
            attempts=_int(get("attempts")) or 0,
            kind="route" if kind == "route" else "function",
            component=get("component") or "",
            source_topic=get("source_topic"),
            source_partition=_int(get("source_partition")),
            source_offset=_int(get("source_offset")),
            first_failure=_time(get("first_failure")),
            last_failure=_time(get("last_failure")),
            version=_int(get("version")) or SCHEMA_VERSION,
        )
    return _read_legacy(found)


def _read_legacy(found: Mapping[str, str]) -> DeadLetterReason | None:
    def get(name: str) -> str | None:
        return next((found[n] for n in LEGACY[name] if n in found), None)

    error_type, message, route = get("error_type"), get("message"), get("route")
    if error_type is None and message is None and route is None:
        return None
    text = message or ""
    if route is not None:
        reason = INVALID_INPUT if text.startswith("rejected") else NOT_DELIVERED if "sink" in text else HANDLER_ERROR
    else:
        reason = {"EventError": UNDECODABLE, "PermanentError": INVALID_INPUT}.get(error_type or "", HANDLER_ERROR)
    return DeadLetterReason(
        reason=reason,
        message=text,
        attempts=_int(get("attempts")) or 0,
        kind="route" if route is not None else "function",
        component=route or get("function") or "",
        source_topic=get("source_topic"),
        version=1,
        error_type=error_type,
    )


# --- writing: reason codes and messages in Kawa's words ----------------------------------------------

_REPR = re.compile(r"<([A-Za-z_][\w.]*)(?: [^<>]*)? at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_UNDECODABLE_TYPES = {
    "UnidentifiedImageError", "InvalidDicomError", "JSONDecodeError", "UnicodeDecodeError", "EventError",
    "UndecodableImage", "DicomDecodeError",
}  # fmt: skip
_BOMB_TYPES = {"DecompressionBombError", "DecompressionBombWarning"}
_PERMANENT_TYPES = {"PermanentError", "MessageRejected", "ValidationError"}


def scrub(text: str) -> str:
    """``text`` without Python object reprs or memory addresses, cut to :data:`MAX_MESSAGE` characters:
    ``cannot identify image file <_io.BytesIO object at 0x7f…>`` → ``cannot identify image file (the
    data)``."""
    cleaned = _REPR.sub("(the data)", text)
    cleaned = _ADDRESS.sub("(an address)", cleaned)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= MAX_MESSAGE else cleaned[: MAX_MESSAGE - 1] + "…"


def _chain(error: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in out and len(out) < 16:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


def classify(error: BaseException | None) -> str:
    """The reason code for ``error`` (looking through its causes): a decompression bomb, undecodable data
    (an image, DICOM or JSON that does not parse), invalid input (``PermanentError``, ``MessageRejected``),
    a timeout, else a handler error. An error may name its code itself in a ``kawa_reason`` attribute."""
    if error is None:
        return UNKNOWN
    chain = _chain(error)
    for item in chain:
        code = getattr(item, "kawa_reason", None)
        if isinstance(code, str) and code in REASONS:
            return code
    names = {type(item).__name__ for item in chain}
    if names & _BOMB_TYPES:
        return DECOMPRESSION_BOMB
    if names & _UNDECODABLE_TYPES:
        return UNDECODABLE
    if names & _PERMANENT_TYPES:
        return INVALID_INPUT
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return HANDLER_ERROR


def tag(error: _E, reason: str) -> _E:
    """``error`` marked with a reason code (for errors whose type does not tell, such as a ``MessageRejected``
    for bytes that do not decode)."""
    error.kawa_reason = reason  # type: ignore[attr-defined]
    return error


def is_permanent(error: BaseException) -> bool:
    """True when no retry can fix ``error`` (see :func:`classify`)."""
    return classify(error) in PERMANENT_REASONS


def describe_error(error: BaseException | None) -> str:
    """A message for ``error`` in plain words: its text scrubbed of reprs, or its kind when it has none."""
    if error is None:
        return "no error was recorded"
    text = scrub(str(error))
    if classify(error) == DECOMPRESSION_BOMB and "decompression" not in text.lower():
        text = f"{text} (decompression bomb guard)".strip()
    return text or f"{type(error).__name__} without a message"


def failure_time() -> datetime:
    """Now, to the millisecond (what the headers keep)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def for_error(
    error: BaseException | None,
    *,
    attempts: int,
    kind: Kind,
    component: str,
    source_topic: str | None = None,
    source_partition: int | None = None,
    source_offset: int | None = None,
    first_failure: datetime | None = None,
    last_failure: datetime | None = None,
    reason: str | None = None,
) -> DeadLetterReason:
    """The reason for giving up on a record after ``error`` (its code from :func:`classify` unless given)."""
    last = last_failure or failure_time()
    return DeadLetterReason(
        reason=reason or classify(error),
        message=describe_error(error),
        attempts=attempts,
        kind=kind,
        component=component,
        source_topic=source_topic or None,
        source_partition=source_partition,
        source_offset=source_offset,
        first_failure=first_failure or last,
        last_failure=last,
    )


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


__all__ = [
    "FIELDS",
    "PERMANENT_REASONS",
    "REASONS",
    "SCHEMA_VERSION",
    "DeadLetterReason",
    "classify",
    "describe_error",
    "for_error",
    "is_permanent",
    "is_reason_header",
    "plain_headers",
    "read_reason",
    "scrub",
    "tag",
    "with_reason",
]
