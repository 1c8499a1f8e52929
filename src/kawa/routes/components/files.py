"""``file:DIR`` — watch a directory for files (source) and write files (sink).

Source options: ``pattern`` (glob, default ``*``), ``recursive``, ``settle`` (a file counts as complete once
unchanged this long, default ``500ms``), ``interval`` (rescan period), ``move`` (move finished files into
this sub-directory) or ``delete``. Without ``move``/``delete`` a ledger of finished files (name, size,
mtime) in the route's progress keeps a restart from reading them again; a file rewritten later is new.
Hidden files and ``*.tmp`` / ``*.part`` are ignored.

Sink options: ``name`` (a template over ``{id}``, ``{key}``, ``{filename}``, ``{ext}`` and headers; default
the ``filename``/``key`` header or the id), ``fsync`` (default true). Writes are atomic (temp file + rename)
and idempotent per name. A dead letter gets its reason beside it, ``<name>.error.json`` (the
:mod:`kawa.deadletter` schema as JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from kawa.deadletter import read_reason
from kawa.errors import InvalidRoute, RouteError
from kawa.routes.components.base import RouteContext, option, parse_duration, path_of
from kawa.routes.message import Message, Token, guess_extension, to_bytes
from kawa.routes.spec import EndpointSpec

_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".swp")


class FileSource:
    exclusive = True

    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.root = path_of(endpoint.uri)
        self.pattern = str(option(endpoint, "pattern", "*"))
        self.recursive = bool(option(endpoint, "recursive", False, bool))
        self.settle = parse_duration(option(endpoint, "settle", "500ms"))
        self.interval = parse_duration(option(endpoint, "interval", "500ms"))
        self.move = option(endpoint, "move")
        self.delete = bool(option(endpoint, "delete", False, bool))
        self._seen: dict[str, str] = {}  # relative path -> stamp, handed out or finished
        self._acked: dict[str, str] = {}
        self._last_scan = 0.0

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        prefix = "f:"
        for name in self.ctx.progress.names(self.ctx.route_id, prefix):
            self._seen[name[len(prefix) :]] = self.ctx.progress.get(self.ctx.route_id, name)

    def _candidates(self) -> list[Path]:
        found = self.root.rglob(self.pattern) if self.recursive else self.root.glob(self.pattern)
        skip_dir = self.root / self.move if self.move else None
        out = []
        for path in found:
            if path.name.startswith(".") or path.name.endswith(_SKIP_SUFFIXES):
                continue
            if skip_dir is not None and skip_dir in path.parents:
                continue
            out.append(path)
        return sorted(out)

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        wait = self._last_scan + self.interval - time.monotonic()
        if wait > 0 and self.ctx.stop.wait(min(wait, timeout)):
            return []
        self._last_scan = time.monotonic()
        out: list[Message] = []
        now = time.time()
        for path in self._candidates():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            if not path.is_file() or now - stat.st_mtime < self.settle:
                continue
            rel = path.relative_to(self.root).as_posix()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
            if self._seen.get(rel) == stamp:
                continue
            try:
                body = path.read_bytes()
            except OSError as exc:
                raise RouteError(f"cannot read {path}: {exc}") from exc
            self._seen[rel] = stamp
            digest = hashlib.sha256(f"{rel}\x1f{stamp}".encode()).hexdigest()[:24]
            out.append(
                Message(
                    body=body, id=digest, source=f"kawa:file:{self.root}", key=rel,
                    headers={"filename": path.name, "path": rel, "size": stat.st_size},
                    time=datetime.fromtimestamp(stat.st_mtime, UTC), tokens=((rel, stamp),),
                )
            )  # fmt: skip
            if len(out) >= max_messages:
                break
        return out

    def ack(self, tokens: Iterable[Token]) -> None:
        for token in tokens:
            rel, stamp = cast("tuple[str, str]", token)
            self._acked[rel] = stamp

    def commit(self) -> None:
        if not self._acked:
            return
        done, self._acked = self._acked, {}
        if self.move or self.delete:
            for rel in done:
                src = self.root / rel
                if self.delete:
                    src.unlink(missing_ok=True)
                else:
                    dst = self.root / str(self.move) / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if src.exists():
                        os.replace(src, dst)
            # The files are gone from the watched tree; keep the ledger too, in case of a crash mid-move.
        self.ctx.progress.put_many(self.ctx.route_id, [(f"f:{rel}", stamp) for rel, stamp in done.items()])

    def close(self) -> None:
        pass


class _Formatter(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return ""


class FileSink:
    def __init__(self, endpoint: EndpointSpec, ctx: RouteContext) -> None:
        self.root = path_of(endpoint.uri)
        self.name = option(endpoint, "name")
        self.fsync = bool(option(endpoint, "fsync", True, bool))

    def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _name(self, message: Message, content_type: str) -> str:
        ext = guess_extension(content_type)
        fields = _Formatter({k: v for k, v in message.headers.items() if isinstance(v, str | int | float)})
        fields.update(id=message.id, key=message.key or "", ext=ext)
        fields.setdefault("filename", message.headers.get("filename") or "")
        if self.name:
            name = str(self.name).format_map(fields)
        else:
            name = str(message.headers.get("filename") or message.headers.get("key") or "") or (
                message.id.replace("/", "_").replace("#", "_") + ext
            )
        target = (self.root / name).resolve()
        if self.root.resolve() not in target.parents:
            raise InvalidRoute(f"file sink: name {name!r} escapes {self.root}; use a relative name")
        return name

    def write(self, messages: Sequence[Message]) -> None:
        for message in messages:
            data, content_type = to_bytes(message.body, message.headers.get("content-type"))
            path = self.root / self._name(message, content_type)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
            reason = read_reason(message.headers)
            if reason is not None:  # a dead letter: keep the reason next to the message
                path.with_name(path.name + ".error.json").write_text(json.dumps(reason.describe(), indent=2))

    def close(self) -> None:
        pass
