"""``validate`` step: JSON Schema or a pydantic model; an invalid message is dead-lettered with the reason.

``validate: {schema: {...}}`` (inline), ``validate: {schema: schemas/order.json}`` (a file), or
``validate: {model: "mypkg.models:Order"}`` (pydantic; ``coerce: true`` replaces the body with the model's
JSON-mode dump). Bodies that are bytes or text are parsed as JSON first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.expr import compile_callable
from kawa.routes.message import Message, decode_json_body

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext


class Validate:
    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        if isinstance(options, str):
            options = {"model": options} if ":" in options and not options.endswith(".json") else {"schema": options}
        if not isinstance(options, Mapping):
            raise InvalidRoute("validate needs {schema: ...} or {model: 'module:Model'}")
        self.model: Any = None
        self.fast: Any = None
        self.validator: Any = None
        self.coerce = bool(options.get("coerce", False))
        if options.get("model"):
            self.model = compile_callable(str(options["model"]))
            if not hasattr(self.model, "model_validate"):
                raise InvalidRoute(f"validate: {options['model']!r} is not a pydantic model class")
        elif options.get("schema") is not None:
            schema = options["schema"]
            if isinstance(schema, str):
                try:
                    schema = json.loads(Path(schema).read_text())
                except (OSError, ValueError) as exc:
                    raise InvalidRoute(f"validate: cannot read JSON Schema file {schema!r}: {exc}") from exc
            from jsonschema import exceptions, validators

            cls = validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except exceptions.SchemaError as exc:
                raise InvalidRoute(f"validate: the JSON Schema is invalid: {exc.message}") from exc
            self.validator = cls(schema)
            try:  # the Rust validator, when installed, answers is_valid ~10x faster; errors still come from jsonschema
                import jsonschema_rs

                self.fast = jsonschema_rs.validator_for(schema)
            except Exception:
                self.fast = None
        else:
            raise InvalidRoute("validate needs schema: (JSON Schema) or model: 'module:Model' (pydantic)")

    def process(self, message: Message) -> list[Message]:
        body = decode_json_body(message)
        if self.model is not None:
            from pydantic import ValidationError

            try:
                model = self.model.model_validate(body)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
                )
                raise MessageRejected(f"invalid: {problems}") from exc
            return [message.derive(model.model_dump(mode="json") if self.coerce else body)]
        if not (self.fast.is_valid(body) if self.fast is not None else self.validator.is_valid(body)):
            from jsonschema.exceptions import best_match

            error = best_match(self.validator.iter_errors(body))
            where = "/".join(str(p) for p in error.absolute_path) if error is not None else ""
            reason = error.message if error is not None else "invalid"
            raise MessageRejected(f"invalid at /{where}: {reason}")
        return [message.derive(body)]
