"""Processors (enterprise integration patterns) and the registry that names them.

A processor turns one message into zero or more (``process``). Stateful ones may also hold messages
(``held`` returns the source tokens they hold, so the source does not commit past them) and emit on a clock
(``tick``). Register your own by name::

    # pyproject.toml of your package
    [project.entry-points."kawa.processors"]
    geo-enrich = "mypkg.routes:GeoEnrich"      # a class or factory called as factory(options, ctx)

or in Python with :func:`register_processor`. Built-in names are listed by :func:`known_processors`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kawa.errors import InvalidRoute, KawaError
from kawa.routes.message import Message, Token
from kawa.routes.spec import line_of

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext

ENTRY_POINT_GROUP = "kawa.processors"


@runtime_checkable
class Processor(Protocol):
    """``process(message) -> messages``. Raise :class:`~kawa.errors.MessageRejected` for input that can never
    succeed (dead-lettered at once); any other exception makes the runner redeliver the message."""

    def process(self, message: Message) -> list[Message]: ...


Factory = Callable[[Any, "RouteContext"], Processor]

_BUILTIN: dict[str, str] = {
    "map": "kawa.routes.processors.basic:Map",
    "filter": "kawa.routes.processors.basic:Filter",
    "choice": "kawa.routes.processors.basic:Choice",
    "split": "kawa.routes.processors.basic:Split",
    "aggregate": "kawa.routes.processors.basic:Aggregate",
    "to": "kawa.routes.processors.basic:To",
    "log": "kawa.routes.processors.basic:Log",
    "set-headers": "kawa.routes.processors.basic:SetHeaders",
    "enrich": "kawa.routes.processors.enrich:Enrich",
    "validate": "kawa.routes.processors.validate:Validate",
    "convert": "kawa.routes.processors.convert:Convert",
    "fetch": "kawa.routes.processors.fetch:Fetch",
    "dicom-deidentify": "kawa.routes.processors.imaging:DicomDeidentify",
    "pixel-redact": "kawa.routes.processors.imaging:PixelRedact",
    "pii-mask": "kawa.routes.processors.pii:PiiMask",
}
_registered: dict[str, Factory | str] = {}
_entry_points: dict[str, Any] | None = None


def register_processor(name: str, factory: Factory | str) -> None:
    """Make ``factory`` (or an import string naming it) available as step ``name``."""
    _registered[name] = factory


def _discovered() -> dict[str, Any]:
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        _entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def known_processors() -> list[str]:
    return sorted({*_BUILTIN, *_registered, *_discovered()})


def _resolve(name: str) -> Factory:
    target: Any = _registered.get(name) or _BUILTIN.get(name)
    if target is None and name in _discovered():
        try:
            target = _discovered()[name].load()
        except Exception as exc:
            raise InvalidRoute(f"processor {name!r} (entry point {ENTRY_POINT_GROUP}) cannot be loaded: {exc}") from exc
    if target is None:
        raise InvalidRoute(f"unknown processor {name!r}; known processors: {', '.join(known_processors())}")
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
    return target  # type: ignore[no-any-return]


class Pipeline:
    """Processors applied in order; what one emits feeds the next."""

    def __init__(self, processors: Sequence[Processor]) -> None:
        self.processors = list(processors)

    def run(self, message: Message) -> list[Message]:
        return self._run_from(0, [message])

    def _run_from(self, index: int, messages: list[Message]) -> list[Message]:
        for processor in self.processors[index:]:
            if not messages:
                break
            out: list[Message] = []
            for message in messages:
                out.extend(processor.process(message))
            messages = out
        return messages

    def tick(self, now: float) -> list[Message]:
        """Flush time windows; what they emit runs through the steps after them."""
        out: list[Message] = []
        for index, processor in enumerate(self.processors):
            tick = getattr(processor, "tick", None)
            if tick is not None:
                emitted = tick(now)
                if emitted:
                    out.extend(self._run_from(index + 1, emitted))
        return out

    def held(self) -> set[Token]:
        tokens: set[Token] = set()
        for processor in self.processors:
            held = getattr(processor, "held", None)
            if held is not None:
                tokens |= held()
        return tokens

    def close(self) -> None:
        for processor in self.processors:
            close = getattr(processor, "close", None)
            if close is not None:
                close()


def _split_step(step: Any) -> tuple[str, Any]:
    if isinstance(step, str):
        return step, None
    if isinstance(step, Mapping) and len(step) == 1:
        name, options = next(iter(step.items()))
        return str(name), options
    raise InvalidRoute(f"a step is {{processor: options}} or a processor name, got {step!r}")


def build_step(step: Any, ctx: RouteContext) -> Processor:
    """One step: a ``{name: options}`` mapping, a name, a processor object or a callable (``map``)."""
    if isinstance(step, Processor) and not isinstance(step, Mapping | str):
        return step
    if callable(step) and not isinstance(step, Mapping | str):
        from kawa.routes.processors.basic import Map

        return Map(step, ctx)
    name, options = _split_step(step)
    factory = _resolve(name)
    return factory(options, ctx)


def build_pipeline(steps: Iterable[Any], ctx: RouteContext, origin: str = "") -> Pipeline:
    """Build every step; errors name the step (and its line when it came from YAML)."""
    processors: list[Processor] = []
    for number, step in enumerate(steps, start=1):
        try:
            processors.append(build_step(step, ctx))
        except KawaError as exc:
            line = line_of(step)
            at = f"{origin} line {line}: " if origin and line else (f"{origin}: " if origin else "")
            raise InvalidRoute(f"{at}route {ctx.route_id!r} step {number}: {exc}") from exc
    return Pipeline(processors)
