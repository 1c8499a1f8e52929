"""``bucket:NAME`` — the object store (the platform's: local directory tree or S3).

Source: new objects of the bucket. The source adds a notification rule (bucket → topic ``topic``, default
the bucket's name, with optional ``prefix``/``suffix`` filters) and consumes that topic with the route's
consumer group; each created object arrives with its bytes as the body (as the ``fetch`` step makes them).
Objects written before the rule existed are not replayed. Progress = the group's offsets. Records of other
buckets on that topic are never fetched: skipped and counted, or dead-lettered with ``on-foreign=dead-letter``.

Sink: ``put`` each message under ``key`` — a template over ``{key}``, ``{filename}``, ``{id}``, ``{ext}`` and
headers (default: the ``key`` header, else the ``filename`` header, else ``<id><ext>``). A put replaces
the object atomically, so redelivery is idempotent. The bucket is created when missing. Option
``prefix`` prepends a path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.components.base import RouteContext, option
from kawa.routes.components.topic import TopicSource
from kawa.routes.message import Message, Token, guess_extension, to_bytes
from kawa.routes.processors.fetch import Fetch
from kawa.routes.spec import EndpointSpec


def bucket_name(endpoint: EndpointSpec) -> str:
    name = endpoint.uri.split(":", 1)[1].strip("/")
    if not name:
        raise InvalidRoute(f"endpoint {endpoint.uri!r} names no bucket; write bucket:NAME")
    return name


class BucketSource:
    exclusive = False

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.bucket = bucket_name(endpoint)
        self.topic = str(option(endpoint, "topic", self.bucket))
        self.prefix = option(endpoint, "prefix")
        self.suffix = option(endpoint, "suffix")
        topic_endpoint = EndpointSpec.parse(
            {"uri": f"topic:{self.topic}", **{k: v for k, v in endpoint.options.items() if k in ("group", "from")}}
        )
        self.events = TopicSource(topic_endpoint, ctx)
        # Only this bucket's records, though its topic may carry others' (on-foreign: skip | dead-letter).
        self.fetch = Fetch({"bucket": self.bucket, "on-foreign": option(endpoint, "on-foreign", "skip")}, ctx)

    def open(self) -> None:
        from kawa.store import NotificationRule

        store = self.ctx.store
        store.create_bucket(self.bucket, exist_ok=True)
        store.add_notification(
            NotificationRule(bucket=self.bucket, topic=self.topic, prefix=self.prefix, suffix=self.suffix)
        )
        self.events.open()

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        for event in self.events.poll(max_messages, timeout):
            try:
                objects = self.fetch.process(event)
            except MessageRejected as exc:  # an undecodable notification: dead-letter it with the reason
                event.error = str(exc)
                out.append(event)
                continue
            if not objects:
                self.events.ack(event.tokens)  # nothing to deliver (removal, test event, another bucket)
            out.extend(objects)
        return out

    def ack(self, tokens: Iterable[Token]) -> None:
        self.events.ack(tokens)

    def commit(self) -> None:
        self.events.commit()

    def close(self) -> None:
        self.events.close()


class _Fields(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return ""


class BucketSink:
    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.bucket = bucket_name(endpoint)
        self.key = option(endpoint, "key")
        self.prefix = str(option(endpoint, "prefix", ""))

    def open(self) -> None:
        self.ctx.store.create_bucket(self.bucket, exist_ok=True)

    def key_for(self, message: Message, content_type: str) -> str:
        ext = guess_extension(content_type)
        if self.key:
            fields = _Fields({k: v for k, v in message.headers.items() if isinstance(v, str | int | float)})
            fields.update(id=message.id, ext=ext)
            fields.setdefault("key", message.headers.get("key") or message.key or "")
            key = str(self.key).format_map(fields)
        else:
            key = str(message.headers.get("key") or message.headers.get("filename") or "") or (
                message.id.replace("#", "-").replace(":", "-") + ext
            )
        return self.prefix + key

    def write(self, messages: Sequence[Message]) -> None:
        store = self.ctx.store
        for message in messages:
            data, content_type = to_bytes(message.body, message.headers.get("content-type"))
            key = self.key_for(message, content_type)
            # Metadata names the route only: ids and source keys may carry identifiers.
            store.put(self.bucket, key, data, content_type=content_type, metadata={"kawa-route": self.ctx.route_id})

    def close(self) -> None:
        pass
