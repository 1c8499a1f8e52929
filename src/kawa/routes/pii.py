"""PII removal for records: drop, mask or keyed-hash named fields; find e-mails, phone numbers and card-like
numbers in free text.

Field actions (``fields: {name: action}``; dotted names reach into nested mappings, ``a.b``):

- ``drop`` — remove the field.
- ``mask`` — replace with ``****`` (``mask-keep-last: 4`` keeps the last characters of values longer than
  twice that: ``************1234``).
- ``hmac`` (alias ``hash``) — ``HMAC-SHA256(key, value)`` as 32 hex digits: equal inputs give equal
  pseudonyms, so joins and counts still work; without the key nothing can be recovered.
- ``redact`` — run the detectors on this field only.

Detectors (``detect: [email, phone, card]``, default all three) scan every string value not named in
``fields`` (or only the fields listed in ``text``) and replace each finding with ``[EMAIL]``, ``[PHONE]`` or
``[CARD]``. The card detector matches 13-19 digits with optional spaces or dashes; the phone detector
matches international (``+`` and 7-15 digits) and common national formats with separators.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kawa.errors import InvalidRoute

ACTIONS = ("drop", "mask", "hmac", "hash", "redact")

DETECTORS: dict[str, tuple[re.Pattern[str], str]] = {
    "email": (re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}"), "[EMAIL]"),
    # Cards before phones: a 16-digit card would otherwise be taken for a phone number.
    "card": (re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), "[CARD]"),
    "phone": (
        re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]?\d{2,4}){1,4}(?![\w])"),
        "[PHONE]",
    ),
}
_ORDER = ("email", "card", "phone")


@dataclass
class PiiPolicy:
    """What to do with a record; build it once, apply it to many records with :func:`mask_record`."""

    fields: Mapping[str, str] = field(default_factory=dict)
    detect: tuple[str, ...] = _ORDER
    text_fields: tuple[str, ...] | None = None
    key: bytes = b""
    mask_keep_last: int = 0
    min_phone_digits: int = 7

    def __post_init__(self) -> None:
        for name, action in self.fields.items():
            if action not in ACTIONS:
                raise InvalidRoute(f"pii-mask: field {name!r} has action {action!r}; use one of {', '.join(ACTIONS)}")
            if action in ("hmac", "hash") and len(self.key) < 16:
                raise InvalidRoute("pii-mask: hmac needs a key of at least 16 bytes")
        unknown = set(self.detect) - set(DETECTORS)
        if unknown:
            raise InvalidRoute(f"pii-mask: unknown detectors {sorted(unknown)}; known: {', '.join(_ORDER)}")
        self._detectors = [DETECTORS[name] for name in _ORDER if name in self.detect]
        self._paths = {name: name.split(".") for name in self.fields}


def keyed_hash(value: Any, key: bytes) -> str:
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32]


def mask_value(value: Any, keep_last: int = 0) -> str:
    text = str(value)
    if keep_last and len(text) > 2 * keep_last:
        return "*" * (len(text) - keep_last) + text[-keep_last:]
    return "****"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _phone(match: re.Match[str], label: str, min_digits: int) -> str:
    found = match.group()
    if sum(ch.isdigit() for ch in found) < min_digits or _ISO_DATE.fullmatch(found):
        return found  # too short for a phone number, or a date
    return label


def scrub_text(text: str, policy: PiiPolicy) -> str:
    """Replace every detector finding in ``text``."""
    for pattern, label in policy._detectors:
        if label == "[PHONE]":
            text = pattern.sub(lambda m: _phone(m, "[PHONE]", policy.min_phone_digits), text)
        else:
            text = pattern.sub(label, text)
    return text


def _scrub(value: Any, policy: PiiPolicy) -> Any:
    if isinstance(value, str):
        return scrub_text(value, policy)
    if isinstance(value, Mapping):
        return {k: _scrub(v, policy) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, policy) for v in value]
    return value


def _apply(record: dict[str, Any], path: list[str], action: str, policy: PiiPolicy) -> None:
    node: Any = record
    for part in path[:-1]:
        child = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(child, Mapping):
            return
        child = dict(child)
        node[part] = child
        node = child
    last = path[-1]
    if not isinstance(node, dict) or last not in node:
        return
    if action == "drop":
        del node[last]
    elif action == "mask":
        node[last] = mask_value(node[last], policy.mask_keep_last) if node[last] is not None else None
    elif action in ("hmac", "hash"):
        node[last] = keyed_hash(node[last], policy.key) if node[last] is not None else None
    else:
        node[last] = _scrub(node[last], policy)


def mask_record(record: Mapping[str, Any], policy: PiiPolicy) -> dict[str, Any]:
    """A new record with ``policy`` applied (the input is not changed)."""
    out = dict(record)
    named_top = {path[0] for path in policy._paths.values()}
    if policy._detectors:
        targets: Iterable[str] = policy.text_fields if policy.text_fields is not None else list(out)
        for name in targets:
            if name in out and name not in named_top:
                out[name] = _scrub(out[name], policy)
    for name, path in policy._paths.items():
        _apply(out, path, policy.fields[name], policy)
    return out
