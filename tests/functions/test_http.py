"""The CloudEvents HTTP adapter over real HTTP: binary and structured mode, every status code, the health
probes, a KafkaSource-shaped delivery of an S3 notification, and ``kawa serve-function`` as a process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kawa.events import CloudEvent, from_record
from kawa.functions import App, Context, PermanentError
from kawa.functions.context import Runtime, derived_id
from kawa.functions.dedupe import MemoryDedupeStore
from kawa.functions.http import BackgroundServer, create_app
from kawa.log.base import EventLog, TopicSpec
from tests.functions.conftest import read_all, wait_for

pytestmark = pytest.mark.timeout(60)

app = App("web")
calls: list[str] = []


@app.function(topic="in", filter={"type": {"prefix": "com.example."}}, reply_topic="replies")
def echo(event: CloudEvent, ctx: Context) -> CloudEvent | None:
    calls.append(event.get_id())
    data = event.get_data()
    if isinstance(data, dict) and data.get("fail") == "retryable":
        raise ConnectionError("model server unreachable")
    if isinstance(data, dict) and data.get("fail") == "permanent":
        raise PermanentError("not an image")
    if isinstance(data, dict) and data.get("quiet"):
        return None
    return ctx.new_event("com.example.echoed", {"got": data})


@app.function(bucket="xray-images", reply_topic="xray-results")
def assess(event: CloudEvent, ctx: Context) -> CloudEvent:
    calls.append(event.get_id())
    data = event.get_data()
    assert isinstance(data, dict)
    record = data["Records"][0]
    return ctx.new_event("com.example.assessed", {"bucket": record["s3"]["bucket"]["name"], "key": event.get_subject()})


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def binary_headers(id: str, type: str = "com.example.ping", **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0", "ce-id": id, "ce-source": "/tests/http", "ce-type": type,
        "content-type": "application/json", **extra,
    }


@pytest.fixture
def server(memlog: EventLog) -> Iterator[tuple[str, Runtime]]:
    calls.clear()
    memlog.create_topic(TopicSpec("replies"))
    runtime = Runtime(app.get("echo"), log=memlog, dedupe=MemoryDedupeStore())
    with BackgroundServer(create_app(runtime)) as srv:
        yield srv.url, runtime


def test_binary_mode_answers_200_with_the_reply_in_binary_mode(server: tuple[str, Runtime], memlog: EventLog) -> None:
    url, runtime = server
    status, headers, body = post(url, json.dumps({"n": 1}).encode(), binary_headers("b-1"))
    assert status == 200
    assert headers["ce-type"] == "com.example.echoed" and headers["ce-specversion"] == "1.0"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"got": {"n": 1}}
    assert headers["ce-id"] == derived_id(runtime.spec, _event("b-1"), "reply:0")  # stable across retries
    (published,) = read_all(memlog, "replies", 1)  # also on the reply topic: a KafkaSource drops sink replies
    assert from_record(published).get_type() == "com.example.echoed"


def test_structured_mode_answers_200_with_a_structured_reply(server: tuple[str, Runtime]) -> None:
    url, _ = server
    event = {"specversion": "1.0", "id": "s-1", "source": "/tests/http", "type": "com.example.ping",
             "datacontenttype": "application/json", "data": {"n": 2}}
    status, headers, body = post(url, json.dumps(event).encode(), {"content-type": "application/cloudevents+json"})
    assert status == 200
    assert headers["content-type"].startswith("application/cloudevents+json")
    reply = json.loads(body)
    assert reply["type"] == "com.example.echoed" and reply["data"] == {"got": {"n": 2}}


def test_202_when_the_handler_returns_nothing(server: tuple[str, Runtime]) -> None:
    url, _ = server
    status, _h, body = post(url, json.dumps({"quiet": True}).encode(), binary_headers("q-1"))
    assert (status, body) == (202, b"")


@pytest.mark.parametrize(
    ("headers", "body", "says"),
    [
        ({"content-type": "application/json"}, b'{"n": 1}', "not a CloudEvent"),
        ({"ce-specversion": "1.0", "ce-source": "/x", "ce-type": "com.example.ping"}, b"", "ce-id"),
        ({"content-type": "application/cloudevents+json"}, b"{not json", "invalid CloudEvent"),
        ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "x"}', "invalid CloudEvent"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "batch mode"),
        ({**binary_headers("v-1"), "ce-specversion": "0.3"}, b"{}", "1.0"),
    ],
)
def test_400_for_malformed_requests_says_what_is_wrong(
    server: tuple[str, Runtime], headers: dict[str, str], body: bytes, says: str
) -> None:
    url, _ = server
    status, _h, answer = post(url, body, headers)
    assert status == 400
    problem = json.loads(answer)
    assert problem["error"] == "malformed" and says in problem["message"]
    assert calls == []


def test_422_for_filtered_events_names_the_failing_attribute(server: tuple[str, Runtime]) -> None:
    url, _ = server
    status, _h, answer = post(url, b"{}", binary_headers("f-1", type="org.other.event"))
    assert status == 422
    problem = json.loads(answer)
    assert problem["error"] == "filtered"
    assert "type='org.other.event' does not start with 'com.example.'" in problem["message"]
    assert calls == []


def test_accept_filtered_answers_202(memlog: EventLog) -> None:
    runtime = Runtime(app.get("echo"), log=memlog, dedupe=MemoryDedupeStore())
    with BackgroundServer(create_app(runtime, accept_filtered=True)) as srv:
        status, headers, _b = post(srv.url, b"{}", binary_headers("f-2", type="org.other.event"))
    assert status == 202 and "does not start with" in headers["kawa-filtered"]


def test_500_for_a_failing_handler_and_400_for_a_permanent_error(server: tuple[str, Runtime]) -> None:
    url, _ = server
    status, _h, answer = post(url, json.dumps({"fail": "retryable"}).encode(), binary_headers("r-1"))
    assert status == 500
    assert json.loads(answer) == {"error": "failed", "message": "ConnectionError: model server unreachable",
                                  "retryable": True}
    status, _h, answer = post(url, json.dumps({"fail": "permanent"}).encode(), binary_headers("p-1"))
    assert status == 400 and json.loads(answer)["error"] == "permanent"
    # A retry of the failed event runs the handler again (it was not marked done).
    post(url, json.dumps({"fail": "retryable"}).encode(), binary_headers("r-1"))
    assert calls.count("r-1") == 2


def test_a_duplicate_delivery_is_acknowledged_without_running_the_handler(server: tuple[str, Runtime]) -> None:
    url, _ = server
    assert post(url, json.dumps({"n": 5}).encode(), binary_headers("d-1"))[0] == 200
    status, headers, _b = post(url, json.dumps({"n": 5}).encode(), binary_headers("d-1"))
    assert status == 202 and headers["kawa-duplicate"] == "true"
    assert calls == ["d-1"]


def test_health_probes(server: tuple[str, Runtime]) -> None:
    url, _ = server
    assert get(url + "/health/liveness")[0] == 200
    status, body = get(url + "/health/readiness")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert get(url + "/stats")[0] == 200


def test_not_ready_answers_503(memlog: EventLog) -> None:
    web = create_app(Runtime(app.get("echo"), log=memlog, dedupe=MemoryDedupeStore()))
    with BackgroundServer(web) as srv:
        web.state.endpoint.ready = False  # what the server does while it drains
        assert get(srv.url + "/health/readiness")[0] == 503
        assert post(srv.url, b"{}", binary_headers("n-1"))[0] == 503


CEPH_RECORD = {
    "eventVersion": "2.2", "eventSource": "ceph:s3", "awsRegion": "zg1", "eventTime": "2024-05-01T12:00:00.000Z",
    "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "scanner"},
    "requestParameters": {"sourceIPAddress": ""}, "responseElements": {},
    "s3": {"s3SchemaVersion": "1.0", "configurationId": "kawa-xray-images-1",
           "bucket": {"name": "xray-images", "ownerIdentity": {"principalId": "scanner"},
                      "arn": "arn:aws:s3:zg1::xray-images", "id": "b1"},
           "object": {"key": "in/img1.dcm", "size": "1048576", "eTag": "abc123", "versionId": "", "sequencer": "0A1B2C",
                      "metadata": [], "tags": []}},
    "eventId": "1714564800.123.abc", "opaqueData": "",
}


def test_a_kafkasource_delivery_of_an_s3_notification_reaches_the_handler_as_the_s3_event(memlog: EventLog) -> None:
    calls.clear()
    memlog.create_topic(TopicSpec("xray-results"))
    runtime = Runtime(app.get("assess"), log=memlog, dedupe=MemoryDedupeStore())
    headers = {  # exactly what a KafkaSource POSTs for a raw (non-CloudEvent) Kafka record
        "ce-specversion": "1.0",
        "ce-id": "partition:0/offset:42",
        "ce-source": "/apis/v1/namespaces/default/kafkasources/xray-assess#xray-images",
        "ce-type": "dev.knative.kafka.event",
        "ce-subject": "partition:0#42",
        "ce-time": "2024-05-01T12:00:00.100Z",
        "ce-key": "in/img1.dcm",
        "ce-kafkaheadercontenttype": "application/json",
        "content-type": "application/json",
    }
    body = json.dumps({"Records": [CEPH_RECORD]}).encode()
    with BackgroundServer(create_app(runtime)) as srv:
        status, reply_headers, reply = post(srv.url, body, headers)
        assert status == 200, reply
        assert reply_headers["ce-type"] == "com.example.assessed"
        assert json.loads(reply) == {"bucket": "xray-images", "key": "in/img1.dcm"}
        # The same notification redelivered with another offset is the same S3 event: deduplicated.
        again = {**headers, "ce-id": "partition:0/offset:43", "ce-subject": "partition:0#43"}
        assert post(srv.url, body, again)[0] == 202
    assert len(calls) == 1 and calls[0] != "partition:0/offset:42", "the handler saw the S3 event, not the wrapper"
    (result,) = read_all(memlog, "xray-results", 1)
    assert from_record(result).get_data() == {"bucket": "xray-images", "key": "in/img1.dcm"}


def _event(id: str) -> CloudEvent:
    return CloudEvent({"id": id, "source": "/tests/http", "type": "com.example.ping", "specversion": "1.0"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


APP_FILE = '''
import kawa

app = kawa.App("proc")


@app.function(topic="in")
def hello(event, ctx):
    return ctx.new_event("hello.reply", {"hello": event.get_data()["name"]})
'''


def test_kawa_serve_function_runs_as_a_process(tmp_path: Path) -> None:
    (tmp_path / "procapp.py").write_text(APP_FILE)
    port = _free_port()
    kawa = str(Path(sys.executable).parent / "kawa")
    process = subprocess.Popen(
        [kawa, "serve-function", "procapp:app", "hello", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.err", "w"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=30, interval=0.05)
        status, headers, body = post(url, json.dumps({"name": "kawa"}).encode(), binary_headers("proc-1", type="x"))
        assert status == 200 and json.loads(body) == {"hello": "kawa"} and headers["ce-type"] == "hello.reply"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, (tmp_path / "serve.err").read_text()[-2000:]


def _ready(url: str) -> bool:
    try:
        return get(url + "/health/readiness")[0] == 200
    except OSError:
        return False
