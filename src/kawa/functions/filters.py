"""Event filters on CloudEvent attributes, in the dialects of Knative Triggers — never on data.

A filter is written as:

- a mapping of attribute → value: exact match (Knative's ``filter.attributes``), e.g. ``{"type": "x"}``;
- a mapping of attribute → ``{"exact"|"prefix"|"suffix": value}``, e.g.
  ``{"type": {"prefix": "com.amazonaws.s3.ObjectCreated"}}`` (several operators: all must hold);
- Knative's ``filters`` dialect: ``{"exact": {...}}``, ``{"prefix": {...}}``, ``{"suffix": {...}}``,
  ``{"all": [f, ...]}``, ``{"any": [f, ...]}``, ``{"not": f}``;
- a list of filters: all must hold. ``None`` or ``{}`` accepts everything.

Keys of one mapping are combined with AND. ``all``/``any``/``not``/``exact``/``prefix``/``suffix`` are
operators, so they cannot be used as extension attribute names in the shorthand (use ``{"exact":
{"any": "..."}}`` for that). An attribute the event does not have never matches. CESQL is not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kawa.errors import InvalidFunction
from kawa.events import CloudEvent

_ATTR = re.compile(r"^[a-z0-9]{1,20}$")
_OPS = ("exact", "prefix", "suffix")
_COMBINATORS = ("all", "any", "not")

# A compiled filter returns None when the event matches, else the reason it does not.
Check = Callable[[dict[str, Any]], str | None]


class EventFilter:
    """A compiled filter. ``explain(event)`` is None when the event passes, else why it does not."""

    def __init__(self, spec: Any = None) -> None:
        self.spec = spec
        self._check = _compile(spec, "filter")

    def explain(self, event: CloudEvent) -> str | None:
        return self._check(event.get_attributes())

    def matches(self, event: CloudEvent) -> bool:
        return self._check(event.get_attributes()) is None

    def __repr__(self) -> str:
        return f"EventFilter({self.spec!r})"


def _value(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if value is None:
        return None
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)


def _attr_check(name: str, op: str, expected: str, where: str) -> Check:
    if not _ATTR.match(name):
        raise InvalidFunction(
            f"{where}: {name!r} is not a CloudEvent attribute name (1-20 lowercase letters or digits)"
        )
    if not isinstance(expected, str) or (op != "exact" and not expected):
        raise InvalidFunction(f"{where}: {op} value for {name!r} must be a non-empty string, got {expected!r}")

    def check(attributes: dict[str, Any]) -> str | None:
        actual = _value(attributes, name)
        if actual is None:
            return f"the event has no {name!r} attribute"
        ok = (
            actual == expected
            if op == "exact"
            else actual.startswith(expected)
            if op == "prefix"
            else actual.endswith(expected)
        )
        if ok:
            return None
        verb = {"exact": "is not", "prefix": "does not start with", "suffix": "does not end with"}[op]
        return f"{name}={actual!r} {verb} {expected!r}"

    return check


def _all(checks: Sequence[Check]) -> Check:
    def check(attributes: dict[str, Any]) -> str | None:
        for one in checks:
            reason = one(attributes)
            if reason is not None:
                return reason
        return None

    return check


def _compile(spec: Any, where: str) -> Check:
    if spec is None:
        return lambda _attributes: None
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        return _all([_compile(item, f"{where}[{i}]") for i, item in enumerate(spec)])
    if not isinstance(spec, Mapping):
        raise InvalidFunction(f"{where}: a filter is a mapping or a list of mappings, got {spec!r}")
    checks: list[Check] = []
    for key, value in spec.items():
        here = f"{where}.{key}"
        if key in _OPS:
            if not isinstance(value, Mapping) or not value:
                raise InvalidFunction(f"{here}: expected a mapping of attribute → value, got {value!r}")
            checks.extend(_attr_check(name, key, expected, here) for name, expected in value.items())
        elif key == "all":
            checks.append(_compile(list(_as_list(value, here)), here))
        elif key == "any":
            checks.append(_any([_compile(item, f"{here}[{i}]") for i, item in enumerate(_as_list(value, here))]))
        elif key == "not":
            checks.append(_not(_compile(value, here), value))
        elif key == "cesql":
            raise InvalidFunction(f"{here}: CESQL filters are not supported; use exact/prefix/suffix/all/any/not")
        elif isinstance(value, str):
            checks.append(_attr_check(key, "exact", value, here))
        elif isinstance(value, Mapping) and value:
            for op, expected in value.items():
                if op not in _OPS:
                    raise InvalidFunction(f"{here}: unknown operator {op!r}; use exact, prefix or suffix")
                checks.append(_attr_check(key, op, expected, here))
        else:
            raise InvalidFunction(
                f"{here}: expected a string (exact match) or {{'prefix'|'suffix'|'exact': value}}, got {value!r}"
            )
    return _all(checks)


def _as_list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise InvalidFunction(f"{where}: expected a non-empty list of filters, got {value!r}")
    return value


def _any(checks: Sequence[Check]) -> Check:
    def check(attributes: dict[str, Any]) -> str | None:
        reasons = []
        for one in checks:
            reason = one(attributes)
            if reason is None:
                return None
            reasons.append(reason)
        return "none of the 'any' filters matched: " + "; ".join(reasons)

    return check


def _not(inner: Check, spec: Any) -> Check:
    def check(attributes: dict[str, Any]) -> str | None:
        return f"the event matches the 'not' filter {spec!r}" if inner(attributes) is None else None

    return check


class TriggerScope:
    """The buckets a function's trigger names (``@app.function(bucket=...)``). An S3 event of any other
    bucket is *foreign*: never handed to the handler, but skipped and counted (``skipped_foreign``) with a
    rate-limited log line, or dead-lettered when ``on_foreign="dead-letter"``. Events that are not S3
    notifications, and every event of a function without buckets, are in scope."""

    def __init__(self, buckets: Sequence[str] = (), on_foreign: str = "skip") -> None:
        if on_foreign not in ("skip", "dead-letter"):
            raise InvalidFunction(f"on_foreign must be 'skip' or 'dead-letter', got {on_foreign!r}")
        self.buckets = tuple(buckets)
        self.on_foreign = on_foreign
        self._scope: Any = None

    @property
    def dead_letters(self) -> bool:
        return self.on_foreign == "dead-letter"

    def _bucket_scope(self) -> Any:
        if self._scope is None:
            from kawa.store.parse import BucketScope  # the store is imported only when a bucket event comes

            self._scope = BucketScope(self.buckets, self.on_foreign)
        return self._scope

    def foreign(self, event: CloudEvent) -> str | None:
        """Why ``event`` is out of scope (the bucket its record names is not the trigger's), else None."""
        if not self.buckets or not str(event.get_type()).startswith("com.amazonaws.s3."):
            return None
        from kawa.errors import EventError
        from kawa.events.s3 import parse_records

        scope = self._bucket_scope()
        try:
            records = parse_records(event)
        except EventError:
            return None  # not readable as a notification: the handler reports that itself
        for record in records:
            if scope.is_foreign(record):
                return str(scope.reason(record))
        return None

    def note(self, logger: Any, component: str, event: CloudEvent) -> None:
        """Log (at most once a minute per bucket) that ``event`` was skipped as foreign."""
        from kawa.errors import EventError
        from kawa.events.s3 import parse_records

        scope = self._bucket_scope()
        try:
            records = parse_records(event)
        except EventError:
            return
        for record in records:
            if scope.is_foreign(record):
                scope.note(logger, component, record)
                return

    def __repr__(self) -> str:
        return f"TriggerScope({list(self.buckets)!r}, on_foreign={self.on_foreign!r})"
