"""Property-based requests from the OpenAPI document (schemathesis): no input makes the API answer 5xx.

Runs as an admin (every action allowed, so requests reach the handlers instead of stopping at 403), with a
modest number of examples per operation. The event-stream endpoint is excluded: it never ends by design.
(The operations are driven with Hypothesis directly: schemathesis' pytest fixture loader does not run under
pytest 9.)
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from kawa.log.base import TopicSpec
from kawa.portal.permissions import Role

EXAMPLES = 6


def test_no_server_errors(client: Any, platform: Any, tokens: dict[Role, str]) -> None:
    platform.store.create_bucket("fuzz-bucket")
    platform.store.put("fuzz-bucket", "a.txt", b"a")
    platform.log.create_topic(TopicSpec("fuzz-topic"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app).exclude(path_regex="^/api/stream|/stream$")
    headers = {"Authorization": f"Bearer {tokens[Role.ADMIN]}"}
    # The first registry call creates the MLflow database (seconds on a busy machine, beyond the fuzzer's
    # 10 s read timeout); open it first, so every fuzzed call meets a ready registry.
    assert client.get("/api/models", headers=headers).status_code == 200
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 35, [op.label for op in operations]
    failures: dict[str, str] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # collect every failing operation, not just the first
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
