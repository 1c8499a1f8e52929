"""Route definitions: the YAML / Python form of a route, validated, with line numbers for errors.

A route file holds ``routes: [ {id, from, steps, to, errors, ...}, ... ]`` (a bare list, or a single route
mapping, is accepted too). An endpoint is a URI string (``topic:xray-images?group=deid``) or a mapping
``{uri: ..., option: value}``; a step is ``{processor-name: options}`` or a bare processor name.
Errors name the file and line: ``routes.yaml line 7: route 'x' step 2: unknown processor 'dicom-deid'``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kawa.errors import InvalidRoute

ROUTE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class LineDict(dict[str, Any]):
    """A mapping read from YAML that remembers its 1-based line."""

    line: int | None = None


class LineList(list[Any]):
    line: int | None = None


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    value = LineDict({str(k): v for k, v in loader.construct_mapping(node, deep=True).items()})
    value.line = node.start_mark.line + 1
    return value


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    value = LineList(loader.construct_sequence(node, deep=True))
    value.line = node.start_mark.line + 1
    return value


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)  # type: ignore[arg-type]


def line_of(value: Any) -> int | None:
    return getattr(value, "line", None)


def where(origin: str, value: Any) -> str:
    line = line_of(value)
    return f"{origin} line {line}" if line else origin


def plain(value: Any) -> Any:
    """Nested LineDict/LineList as plain dicts and lists (for dumping)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


class EndpointSpec(_Spec):
    """An endpoint: a URI plus options (the URI's query parameters merged with mapping options)."""

    uri: str
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def scheme(self) -> str:
        from kawa.plugins import uri_scheme

        return uri_scheme(self.uri)

    @classmethod
    def parse(cls, value: Any) -> EndpointSpec:
        if isinstance(value, EndpointSpec):
            return value
        if isinstance(value, str):
            uri, options = value, {}
        elif isinstance(value, Mapping) and isinstance(value.get("uri"), str):
            uri, options = value["uri"], {k: v for k, v in value.items() if k != "uri"}
        else:
            raise ValueError(f"an endpoint is a URI string or a mapping with 'uri', got {value!r}")
        base, sep, query = uri.partition("?")
        merged: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True)) if sep else {}
        merged.update(options)
        return cls(uri=base, options=merged)

    def __str__(self) -> str:
        return self.uri


class ErrorPolicy(_Spec):
    """Dead-letter channel and redelivery: a failing message is retried ``max_redeliveries`` times with
    ``backoff`` (``delay`` times 1, 2, 4 … capped at ``max-delay`` seconds), then sent to ``dead-letter``.
    Rejections (invalid or undecodable input) go to the dead letter at once."""

    dead_letter: EndpointSpec | None = Field(None, alias="dead-letter")
    max_redeliveries: int = Field(3, alias="max-redeliveries", ge=0, le=100)
    backoff: Literal["none", "fixed", "linear", "exponential"] = "exponential"
    delay: float = Field(0.2, ge=0)
    max_delay: float = Field(10.0, alias="max-delay", gt=0)

    @field_validator("dead_letter", mode="before")
    @classmethod
    def _endpoint(cls, value: Any) -> Any:
        return None if value is None else EndpointSpec.parse(value)

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before redelivery number ``attempt`` (1-based)."""
        if self.backoff == "none":
            return 0.0
        factor = {"fixed": 1, "linear": attempt, "exponential": 2 ** (attempt - 1)}[self.backoff]
        return float(min(self.delay * factor, self.max_delay))


class RouteSpec(_Spec):
    """One route: ``from`` a source endpoint, through ``steps``, ``to`` one or more sink endpoints."""

    id: str
    from_: EndpointSpec = Field(alias="from")
    steps: list[Any] = Field(default_factory=list)
    to: list[EndpointSpec] = Field(default_factory=list)
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)  # type: ignore[arg-type]
    batch: int = Field(100, ge=1, le=100_000, description="messages per source poll")
    standalone: bool = Field(False, description="not run by `kawa up`; run it with `kawa routes run ID`")
    description: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ROUTE_ID.match(value):
            raise ValueError(f"route id {value!r} must match {ROUTE_ID.pattern} (lower-case, digits, . _ -)")
        return value

    @field_validator("from_", mode="before")
    @classmethod
    def _from(cls, value: Any) -> Any:
        return EndpointSpec.parse(value)

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> Any:
        if value is None:
            return []
        items = value if isinstance(value, list | tuple) else [value]
        return [EndpointSpec.parse(v) for v in items]

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise ValueError("steps must be a list of {processor: options} items")
        return list(value)

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data (what ``kawa routes apply`` stores)."""
        data: dict[str, Any] = {"id": self.id, "from": _endpoint_dict(self.from_)}
        data["steps"] = plain(self.steps)
        if self.to:
            data["to"] = [_endpoint_dict(e) for e in self.to]
        data["errors"] = plain(self.errors.model_dump(by_alias=True, exclude_none=True))
        if self.errors.dead_letter is not None:
            data["errors"]["dead-letter"] = _endpoint_dict(self.errors.dead_letter)
        data["batch"] = self.batch
        if self.standalone:
            data["standalone"] = True
        if self.description:
            data["description"] = self.description
        return data


def _endpoint_dict(endpoint: EndpointSpec) -> Any:
    return {"uri": endpoint.uri, **plain(endpoint.options)} if endpoint.options else endpoint.uri


def route(id: str, from_: Any, steps: Sequence[Any] = (), to: Any = None, **fields: Any) -> RouteSpec:
    """Build a route in Python. Steps may also be processor objects or plain callables (used as ``map``)."""
    return parse_route({"id": id, "from": from_, "steps": list(steps), "to": to, **fields})


def parse_route(data: Mapping[str, Any], origin: str = "<python>") -> RouteSpec:
    try:
        return RouteSpec.model_validate(dict(data))
    except ValidationError as exc:
        name = data.get("id", "?")
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'route'}: {err['msg']}" for err in exc.errors())
        raise InvalidRoute(f"{where(origin, data)}: route {name!r} is invalid: {problems}") from exc


def load_routes(text: str, origin: str = "<routes>") -> list[RouteSpec]:
    """Parse a routes document (YAML). Errors name ``origin`` and the line."""
    try:
        document = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidRoute(f"{origin}{line}: not valid YAML: {exc.problem or exc}; fix the syntax there") from exc
    except yaml.YAMLError as exc:
        raise InvalidRoute(f"{origin}: not valid YAML: {exc}") from exc
    if document is None:
        return []
    if isinstance(document, Mapping) and "routes" in document:
        items = document["routes"]
    elif isinstance(document, Mapping) and "id" in document:
        items = [document]
    else:
        items = document
    if not isinstance(items, list):
        raise InvalidRoute(f"{where(origin, document)}: expected 'routes:' followed by a list of routes")
    routes: list[RouteSpec] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, Mapping):
            raise InvalidRoute(f"{where(origin, item)}: each route must be a mapping with id, from, steps, to")
        spec = parse_route(item, origin)
        if spec.id in seen:
            raise InvalidRoute(f"{where(origin, item)}: route id {spec.id!r} appears twice")
        seen.add(spec.id)
        routes.append(spec)
    return routes
