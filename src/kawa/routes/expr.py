"""Small, safe expressions for ``map``, ``filter``, ``choice`` and friends.

An expression is a Python *expression* restricted to: literals, names, ``body[...]``/``headers[...]``
subscripts, arithmetic, comparisons, ``and``/``or``/``not``, conditional expressions, comprehensions-free
list/dict/tuple displays, calls to a fixed set of functions (``len str int float bool abs round min max sum
sorted lower upper``…), and a fixed set of methods (``get``, ``lower``, ``startswith``…). No attribute other
than those methods, no dunder names, no imports, no lambdas: an expression cannot reach the interpreter.

Names an expression sees: ``body``, ``headers``, ``id``, ``key``, and — when the body is a mapping — each of
its keys whose name is an identifier (``amount > 100`` reads ``body["amount"]``; a missing key is ``None``).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kawa.errors import InvalidRoute
from kawa.routes.message import Message

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sum": sum,
    "sorted": sorted,
    "list": list,
    "dict": dict,
    "isinstance_str": lambda v: isinstance(v, str),
    "lower": lambda v: str(v).lower(),
    "upper": lambda v: str(v).upper(),
    "matches": lambda pattern, v: re.search(pattern, str(v)) is not None,
    "floor": math.floor,
    "ceil": math.ceil,
    "now": lambda: datetime.now(UTC).isoformat(),
}
_METHODS = frozenset(
    {
        "get", "keys", "values", "items", "lower", "upper", "strip", "lstrip", "rstrip", "startswith",
        "endswith", "split", "replace", "join", "count", "find", "title", "isdigit", "format",
    }
)  # fmt: skip
_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call, ast.Constant,
    ast.Subscript, ast.Slice, ast.Name, ast.Load, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.Attribute,
    ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
    ast.Pow, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
    ast.keyword, ast.JoinedStr, ast.FormattedValue,
)  # fmt: skip


class _Missing(dict[str, Any]):
    """Namespace that answers None for body fields that are absent."""

    def __missing__(self, name: str) -> Any:
        return None


class Expression:
    """A compiled safe expression; call :meth:`evaluate` with a message."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise InvalidRoute(f"expression {source!r} is not valid: {exc.msg}") from exc
        for node in ast.walk(tree):
            if not isinstance(node, _NODES):
                raise InvalidRoute(
                    f"expression {source!r} uses {type(node).__name__}, which expressions do not allow; "
                    "use a Python callable ('module:function') for anything beyond simple expressions"
                )
            if isinstance(node, ast.Name) and node.id.startswith("_"):
                raise InvalidRoute(f"expression {source!r}: names starting with '_' are not allowed")
            if isinstance(node, ast.Attribute) and node.attr not in _METHODS:
                raise InvalidRoute(
                    f"expression {source!r}: attribute {node.attr!r} is not allowed; "
                    f"allowed methods: {', '.join(sorted(_METHODS))}"
                )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in _FUNCTIONS:
                raise InvalidRoute(
                    f"expression {source!r}: unknown function {node.func.id!r}; known: {', '.join(sorted(_FUNCTIONS))}"
                )
        self._code = compile(tree, f"<expression {source!r}>", "eval")

    def evaluate(self, message: Message, **extra: Any) -> Any:
        namespace = _Missing()
        body = message.body
        if isinstance(body, Mapping):
            for name, value in body.items():
                if isinstance(name, str) and name.isidentifier():
                    namespace[name] = value
        namespace.update(_FUNCTIONS)
        namespace.update(body=body, headers=message.headers, id=message.id, key=message.key, **extra)
        return eval(self._code, {"__builtins__": {}}, namespace)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def compile_callable(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` (or ``module:Class.method``)."""
    import importlib

    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidRoute(f"{ref!r} is not a 'module:function' reference")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidRoute(f"cannot import {ref!r}: {exc}; check the module is on the Python path") from exc
    if not callable(target):
        raise InvalidRoute(f"{ref!r} is not callable")
    return target  # type: ignore[no-any-return]


def looks_like_callable(text: str) -> bool:
    """``pkg.mod:func`` — a reference, not an expression."""
    return re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text.strip()) is not None
