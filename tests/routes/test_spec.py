"""Route definitions: YAML errors name the line, unknown components and processors list the known ones,
expressions stay safe."""

from __future__ import annotations

import pytest

from kawa.errors import InvalidRoute
from kawa.routes.expr import Expression
from kawa.routes.message import Message
from kawa.routes.runner import validate_route
from kawa.routes.spec import load_routes


def test_malformed_yaml_names_the_line() -> None:
    text = "routes:\n  - id: a\n    from: topic:x\n    steps: [\n      - map: {expr: 1}\n"
    with pytest.raises(InvalidRoute, match=r"routes\.yaml line \d+, column \d+: not valid YAML"):
        load_routes(text, "routes.yaml")


def test_unknown_processor_names_line_and_known_ones() -> None:
    text = (
        "routes:\n  - id: a\n    from: topic:x\n    steps:\n      - fetch: {}\n"
        "      - dicom-deidentfy: {}\n    to: bucket:y\n"
    )
    (spec,) = load_routes(text, "routes.yaml")
    with pytest.raises(InvalidRoute) as info:
        validate_route(spec, "routes.yaml")
    message = str(info.value)
    assert "routes.yaml line 6" in message and "unknown processor 'dicom-deidentfy'" in message
    assert "dicom-deidentify" in message and "pii-mask" in message


def test_unknown_component_lists_known() -> None:
    (spec,) = load_routes("id: a\nfrom: ftp://host/dir\nto: topic:y\n", "r.yaml")
    with pytest.raises(
        InvalidRoute, match=r"unknown source component 'ftp://host/dir'; known sources: .*bucket:.*topic:"
    ):
        validate_route(spec, "r.yaml")
    (spec,) = load_routes("id: a\nfrom: topic:x\nto: mqtt:foo\n", "r.yaml")
    with pytest.raises(InvalidRoute, match=r"unknown sink component 'mqtt:foo'; known sinks: .*sql:"):
        validate_route(spec, "r.yaml")


def test_invalid_fields_name_the_route_line() -> None:
    text = "routes:\n  - id: ok\n    from: topic:x\n  - id: Bad Id\n    from: topic:x\n"
    with pytest.raises(InvalidRoute, match=r"r\.yaml line 4: route 'Bad Id' is invalid: id"):
        load_routes(text, "r.yaml")


def test_endpoint_options_merge_query_and_mapping() -> None:
    (spec,) = load_routes("id: a\nfrom: {uri: 'topic:x?group=g', from: latest}\nto: bucket:y\n")
    assert spec.from_.uri == "topic:x" and spec.from_.options == {"group": "g", "from": "latest"}
    assert load_routes(yaml_dump(spec.to_dict()))[0] == spec


def yaml_dump(data: object) -> str:
    import yaml

    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    "source",
    ["__import__('os')", "body.__class__", "open('/etc/passwd')", "(lambda: 1)()", "[x for x in body]"],
)
def test_expressions_cannot_reach_the_interpreter(source: str) -> None:
    with pytest.raises(InvalidRoute):
        Expression(source)


def test_expressions_read_fields_and_headers() -> None:
    message = Message(body={"amount": 150, "tags": ["a"]}, id="1", source="s", headers={"p": "hi"})
    assert Expression("amount > 100 and headers['p'] == 'hi' and len(tags) == 1").evaluate(message) is True
    assert Expression("missing is None").evaluate(message) is True
