"""Batch → stream: read a CSV or Parquet file row by row and pace the rows by their event time.

Pacing: with ``speed`` S and a time column, the row with event time ``t`` is released at
``w0 + (t - t0) / S`` (``t0``/``w0``: the first row's event time and release time) — ``--speed 60`` plays an
hour of data in a minute. ``max_rate`` R releases at most R rows per second (alone or on top of ``speed``);
``asap`` releases rows as fast as they can be written. Rows whose event time goes backwards are released at
once. Rows that cannot be decoded (bad UTF-8, wrong number of fields) are yielded as :class:`BadRow` so
that a route dead-letters them and goes on.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kawa.errors import InvalidRoute, RouteError

_SURROGATES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (decoded with surrogateescape)


@dataclass(frozen=True)
class BadRow:
    """A row that could not be decoded; ``reason`` says why, ``raw`` holds what was read."""

    index: int
    reason: str
    raw: str


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    raise InvalidRoute(f"cannot replay {path}: use a .csv or .parquet file")


def count_rows(path: Path) -> int | None:
    """Rows in the file (Parquet: from its metadata; CSV: newline count minus the header, an estimate when
    fields hold newlines)."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    lines = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            lines += chunk.count(b"\n")
    return max(lines - 1, 0)


def _infer(value: str) -> Any:
    if value == "":
        return None
    digits = value.lstrip("-")
    if digits.startswith("0") and len(digits) > 1 and not digits.startswith("0."):
        return value  # leading zeros: an identifier (postcode, phone), not a number
    try:
        return int(value) if digits.isdigit() else float(value)
    except ValueError:
        return value


def iter_rows(path: Path, start: int = 0, *, infer: bool = False) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    """``(index, row)`` from row ``start`` on (0-based, header excluded)."""
    if not path.is_file():
        raise RouteError(f"replay file {path} does not exist")
    if file_format(path) == "parquet":
        yield from _parquet_rows(path, start)
        return
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, "rb") as handle:
        lines = (line.decode("utf-8", "surrogateescape") for line in handle)
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        for index, fields in enumerate(reader):
            if index < start:
                continue
            if not fields:
                continue
            raw = delimiter.join(fields)
            if not raw.isascii() and _SURROGATES.search(raw):
                yield index, BadRow(index, "row is not valid UTF-8", raw.encode("utf-8", "replace").decode())
            elif len(fields) != len(header):
                yield index, BadRow(index, f"row has {len(fields)} fields, the header has {len(header)}", raw)
            else:
                yield index, {k: (_infer(v) if infer else v) for k, v in zip(header, fields, strict=True)}


def _parquet_rows(path: Path, start: int) -> Iterator[tuple[int, dict[str, Any] | BadRow]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    index = 0
    for group in range(parquet.num_row_groups):
        rows_in_group = parquet.metadata.row_group(group).num_rows
        if index + rows_in_group <= start:
            index += rows_in_group
            continue
        for batch in parquet.iter_batches(batch_size=4096, row_groups=[group]):
            for row in batch.to_pylist():
                if index >= start:
                    yield index, row
                index += 1


def event_seconds(value: Any) -> float | None:
    """An event time as epoch seconds: datetimes (naive = UTC), epoch seconds or milliseconds, ISO text."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float):
        return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
    text = str(value).strip()
    try:
        return event_seconds(float(text))
    except ValueError:
        pass
    try:
        return event_seconds(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise RouteError(f"cannot read {value!r} as a time: use ISO-8601 or epoch seconds/milliseconds") from None


class Pacer:
    """When to release each row. ``due(t)`` is the monotonic release time of a row with event time ``t``."""

    def __init__(
        self,
        *,
        speed: float | None = None,
        max_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed is not None and speed <= 0:
            raise InvalidRoute("speed must be positive (e.g. 60 = one hour of event time per minute)")
        if max_rate is not None and max_rate <= 0:
            raise InvalidRoute("max-rate must be positive (rows per second)")
        self.speed = speed
        self.max_rate = max_rate
        self.clock = clock
        self._anchor: tuple[float, float] | None = None
        self._last_release: float | None = None

    def due(self, event_time: float | None) -> float:
        now = self.clock()
        due = now
        if self.speed is not None and event_time is not None:
            if self._anchor is None:
                self._anchor = (event_time, now)
            t0, w0 = self._anchor
            due = max(now, w0 + (event_time - t0) / self.speed) if event_time >= t0 else now
        if self.max_rate is not None and self._last_release is not None:
            due = max(due, self._last_release + 1.0 / self.max_rate)
        return due

    def released(self, at: float) -> None:
        self._last_release = at


def row_event(row: dict[str, Any], time_column: str | None) -> float | None:
    if not time_column:
        return None
    if time_column not in row:
        raise RouteError(f"time column {time_column!r} is not in the row; columns: {', '.join(map(str, row))}")
    return event_seconds(row[time_column])


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Rows as CSV text (header from the first row)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


@dataclass
class ReplayResult:
    published: int = 0
    bad_rows: int = 0
    first_event: float | None = None
    last_event: float | None = None
    wall_s: float = 0.0


def publish_file(
    path: Path,
    producer: Any,
    topic: str,
    *,
    time_column: str | None = None,
    key_column: str | None = None,
    speed: float | None = None,
    max_rate: float | None = None,
    event_type: str = "kawa.replay.row",
    on_row: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Any] = time.sleep,
) -> ReplayResult:
    """Publish every row of ``path`` to ``topic`` as a CloudEvent (Kafka binary mode), paced by ``Pacer``.

    The event's ``time`` is the row's event time (when ``time_column`` is given), its ``id``
    ``<file>:<row>`` and its ``source`` ``/kawa/replay/<file>``: replaying a file twice yields the same
    identities. Records are flushed before every wait, so their log timestamps show the pacing. Bad rows are
    skipped and counted.
    """
    from kawa.log.base import now_ms
    from kawa.routes.components.topic import event_headers
    from kawa.routes.message import Message, dumps

    pacer = Pacer(speed=speed if time_column else None, max_rate=max_rate)
    if speed is not None and not time_column:
        raise InvalidRoute("pacing by --speed needs --time-column (or use --max-rate / --asap)")
    result = ReplayResult()
    started = time.monotonic()
    source = f"/kawa/replay/{path.name}"
    pending = 0
    for index, row in iter_rows(path):
        if should_stop():
            break
        if isinstance(row, BadRow):
            result.bad_rows += 1
            continue
        event_time = row_event(row, time_column)
        due = pacer.due(event_time)
        delay = due - pacer.clock()
        if delay > 0:
            if pending:
                producer.flush()
                pending = 0
            sleep(delay)
        when = datetime.fromtimestamp(event_time, UTC) if event_time is not None else datetime.now(UTC)
        message = Message(body=row, id=f"{path.name}:{index}", source=source, time=when)
        key = row.get(key_column) if key_column else None
        producer.produce(
            topic, dumps(row), key=None if key is None else str(key).encode(),
            headers=event_headers(message, event_type, source, "application/json"), timestamp_ms=now_ms(),
        )  # fmt: skip
        pacer.released(pacer.clock())
        pending += 1
        if pending >= 1000:
            producer.flush()
            pending = 0
        result.published += 1
        if event_time is not None:
            result.first_event = event_time if result.first_event is None else result.first_event
            result.last_event = event_time
        if on_row is not None:
            on_row(index)
    producer.flush()
    result.wall_s = time.monotonic() - started
    return result
