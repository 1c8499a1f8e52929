"""``convert`` step: change a body's format.

``convert: {to: json|jsonl|csv|parquet|records|png, from: csv|json|jsonl|parquet|dicom}``. ``from`` defaults
to the ``content-type`` header or the body's type. Tabular formats convert through a list of records;
``records`` hands the list (or mapping) itself to the next step. ``png`` renders a DICOM image (modality
and VOI LUT / window applied, MONOCHROME1 inverted, 8-bit; ``bits: 16`` keeps 16-bit grey; first frame).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kawa.errors import InvalidRoute, MessageRejected
from kawa.routes.message import Message, dumps, is_dicom

if TYPE_CHECKING:
    from kawa.routes.components.base import RouteContext

_TARGETS = ("json", "jsonl", "csv", "parquet", "records", "png")
_SOURCES = ("csv", "json", "jsonl", "parquet", "dicom", "records")
_TYPES = {
    "json": "application/json", "jsonl": "application/x-ndjson", "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet", "png": "image/png",
}  # fmt: skip


def _detect(message: Message) -> str:
    body = message.body
    if is_dicom(body):
        return "dicom"
    if not isinstance(body, bytes | bytearray | memoryview | str):
        return "records"
    content_type = str(message.headers.get("content-type", "")).split(";")[0].strip()
    for fmt, known in _TYPES.items():
        if content_type == known:
            return fmt
    raw = bytes(body[:132]) if not isinstance(body, str) else body[:132].encode()
    if raw[:4] == b"PAR1":
        return "parquet"
    if raw[128:132] == b"DICM" or content_type == "application/dicom":
        return "dicom"
    if raw.lstrip()[:1] in (b"[", b"{"):
        return "json"
    return "csv"


def _records(message: Message, fmt: str) -> Any:
    body = message.body
    try:
        if fmt == "records":
            return body
        text = body if isinstance(body, str) else None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(bytes(body))).to_pylist()
        text = text if text is not None else bytes(body).decode("utf-8")
        if fmt == "json":
            return json.loads(text)
        if fmt == "jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return list(csv.DictReader(io.StringIO(text)))
    except Exception as exc:
        raise MessageRejected(f"convert: body is not valid {fmt}: {type(exc).__name__}: {exc}") from exc


def dicom_png(ds: Any, bits: int = 8) -> bytes:
    """Render a DICOM image as PNG (see the module docstring)."""
    import numpy as np
    from PIL import Image
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    try:
        array = ds.pixel_array
    except Exception as exc:
        raise MessageRejected(f"convert: cannot decode the DICOM pixel data: {exc}") from exc
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        array = array[0]
    if array.ndim == 3:  # colour
        return _png(Image.fromarray(array.astype(np.uint8)))
    values = apply_voi_lut(apply_modality_lut(array, ds), ds).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    if bits == 16:
        return _png(Image.fromarray((scaled * 65535).round().astype(np.uint16)))
    return _png(Image.fromarray((scaled * 255).round().astype(np.uint8)))


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Convert:
    def __init__(self, options: Any, ctx: RouteContext | None = None) -> None:
        opts = {"to": options} if isinstance(options, str) else dict(options or {})
        self.to = str(opts.get("to", ""))
        self.source = opts.get("from")
        self.bits = int(opts.get("bits", 8))
        if self.to not in _TARGETS:
            raise InvalidRoute(f"convert: to must be one of {', '.join(_TARGETS)}, got {self.to!r}")
        if self.source is not None and self.source not in _SOURCES:
            raise InvalidRoute(f"convert: from must be one of {', '.join(_SOURCES)}, got {self.source!r}")

    def process(self, message: Message) -> list[Message]:
        fmt = str(self.source or _detect(message))
        if self.to == "png":
            if fmt != "dicom":
                raise MessageRejected(f"convert: only DICOM converts to png, the body is {fmt}")
            from kawa.routes.processors.imaging import read_dicom

            data = dicom_png(read_dicom(message.body), self.bits)
            return [message.derive(data, headers=self._headers(message, "png"))]
        if fmt == "dicom":
            raise MessageRejected(f"convert: DICOM converts only to png, not {self.to}")
        records = _records(message, fmt)
        if self.to == "records":
            return [message.derive(records, headers={"content-type": "application/json"})]
        rows = records if isinstance(records, list) else [records]
        if self.to == "json":
            data = dumps(records)
        elif self.to == "jsonl":
            data = b"".join(dumps(r) + b"\n" for r in rows)
        elif self.to == "csv":
            from kawa.routes.replay import csv_bytes

            if not all(isinstance(r, Mapping) for r in rows):
                raise MessageRejected("convert: csv needs records (mappings)")
            data = csv_bytes([dict(r) for r in rows])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist([dict(r) for r in rows]), buffer)
            data = buffer.getvalue()
        return [message.derive(data, headers=self._headers(message, self.to))]

    @staticmethod
    def _headers(message: Message, fmt: str) -> dict[str, Any]:
        headers: dict[str, Any] = {"content-type": _TYPES[fmt]}
        for name in ("filename", "key"):
            value = message.headers.get(name)
            if isinstance(value, str) and "." in value.rsplit("/", 1)[-1]:
                headers[name] = value.rsplit(".", 1)[0] + "." + fmt
        return headers
