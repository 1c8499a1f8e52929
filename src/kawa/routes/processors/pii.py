"""``pii-mask`` step: :mod:`kawa.routes.pii` over JSON-like records (a record or a list of records)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.message import Message, decode_json_body
from kawa.routes.pii import PiiPolicy, mask_record

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext


class PiiMask:
    """``pii-mask: {fields: {email: hmac, name: drop, card: mask}, detect: [email, phone, card],
    text: [notes], mask-keep-last: 4, key-file: PATH}``."""

    def __init__(self, options: Any, ctx: RouteContext) -> None:
        opts = (
            {str(k).replace("_", "-"): v for k, v in (options or {}).items()} if isinstance(options, Mapping) else None
        )
        if opts is None:
            raise InvalidRoute("pii-mask: options must be a mapping (fields, detect, text, mask-keep-last, key-file)")
        fields = dict(opts.pop("fields", None) or {})
        detect = opts.pop("detect", ["email", "phone", "card"])
        text = opts.pop("text", None)
        keep_last = int(opts.pop("mask-keep-last", 0))
        key_file = opts.pop("key-file", None)
        if opts:
            raise InvalidRoute(
                f"pii-mask: unknown options {sorted(opts)}; use fields, detect, text, mask-keep-last, key-file"
            )
        needs_key = any(a in ("hmac", "hash") for a in fields.values())
        self.policy = PiiPolicy(
            fields=fields, detect=tuple(detect or ()), text_fields=tuple(text) if text is not None else None,
            key=ctx.key(key_file) if needs_key else b"", mask_keep_last=keep_last,
        )  # fmt: skip

    def process(self, message: Message) -> list[Message]:
        body = decode_json_body(message)
        if isinstance(body, Mapping):
            return [message.derive(mask_record(body, self.policy))]
        if isinstance(body, list) and all(isinstance(r, Mapping) for r in body):
            return [message.derive([mask_record(r, self.policy) for r in body])]
        raise MessageRejected(f"pii-mask: body must be a record or a list of records, got {type(body).__name__}")
