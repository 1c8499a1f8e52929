"""Bytes that can never become an image, for dead-letter tests: a decompression bomb (a tiny PNG whose
header declares 400 million pixels) and an "image" that is really text carrying a patient's name."""

from __future__ import annotations

import struct
import zlib

PHI_MARKER = "DOE^JOHNATHAN"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` 1-bit pixels over a few bytes of data (Pillow
    refuses it on open: more than twice ``Image.MAX_IMAGE_PIXELS``)."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def not_an_image() -> bytes:
    return f"Patient: {PHI_MARKER}, born 1961-02-03, ward 7 — this is no image".encode()


def schema_names(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> set[str]:
    """The dead-letter schema's header names a record carries (plain and extension forms)."""
    return {name for name, _v in headers if name.startswith(("kawa-dlq-", "ce_kawadlq"))}
