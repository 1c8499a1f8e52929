"""Bucket-name, key and metadata rules, the same on every backend so data moves between them unchanged."""

from __future__ import annotations

import ipaddress
import mimetypes
import re
from collections.abc import Mapping
from pathlib import Path

from kawa.errors import InvalidBucketName, InvalidKey, InvalidMetadata

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255  # NAME_MAX of common filesystems: the local backend stores a segment as a name
MAX_TAGS = 10

_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_BAD_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BAD_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_bucket_name(name: str) -> str:
    """Enforce the S3 general-purpose bucket naming rules; returns ``name``."""

    def bad(why: str) -> InvalidBucketName:
        return InvalidBucketName(
            f"invalid bucket name {name!r}: {why}. Use 3-63 lower-case letters, digits, '.' and '-', "
            "starting and ending with a letter or digit (e.g. 'xray-images')"
        )

    if not isinstance(name, str):
        raise InvalidBucketName(f"bucket name must be a string, got {type(name).__name__}")
    if not 3 <= len(name) <= 63:
        raise bad(f"it has {len(name)} characters")
    if not _BUCKET_CHARS.match(name):
        raise bad("it may only hold lower-case letters, digits, '.' and '-'")
    if ".." in name:
        raise bad("it has two adjacent periods")
    if name.startswith(_BAD_BUCKET_PREFIXES) or name.endswith(_BAD_BUCKET_SUFFIXES):
        raise bad("it uses a prefix or suffix S3 reserves")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise bad("it is formatted as an IP address")


def validate_key(key: str) -> str:
    """Enforce Kawa's key rules; returns ``key``.

    A key is 1-1024 bytes of UTF-8 made of ``/``-separated segments. No segment is empty, ``.`` or ``..``
    or longer than 255 bytes; no NUL, control characters or backslashes; no leading ``/``. So a key can
    never name a path outside its bucket on the local backend, and means the same on S3.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey("object key is empty; give the object a name such as 'images/scan-001.dcm'")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"object key {key!r} is not valid UTF-8 text ({exc.reason})") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is {len(encoded)} bytes long; the limit is {MAX_KEY_BYTES} bytes")
    if "\\" in key:
        raise InvalidKey(f"object key {key!r} contains a backslash; use '/' to separate path segments")
    if _CONTROL.search(key):
        raise InvalidKey(f"object key {key!r} contains NUL or another control character")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} starts with '/'; keys are relative to their bucket")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey(f"object key {key!r} has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise InvalidKey(f"object key {key!r} has a {segment!r} segment, which could escape the bucket")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKey(
                f"object key {key!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes; split it with '/'"
            )
    return key


def key_path(root: Path, key: str) -> Path:
    """The path of ``key`` under ``root`` (a validated key always lands inside ``root``)."""
    return root.joinpath(*validate_key(key).split("/"))


def normalize_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """User metadata as S3 stores it: lower-case names of ``[a-z0-9._-]``, printable ASCII values."""
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        lowered = str(name).lower()
        if not _META_KEY.match(lowered):
            raise InvalidMetadata(
                f"metadata name {name!r} is invalid: use letters, digits, '.', '_' and '-' (S3 sends names "
                "as HTTP headers)"
            )
        if not isinstance(value, str) or not _printable_ascii(value):
            raise InvalidMetadata(
                f"metadata value for {name!r} must be printable ASCII text; percent- or base64-encode "
                "other values"
            )
        out[lowered] = value
    if sum(len(k) + len(v) for k, v in out.items()) > 2048:
        raise InvalidMetadata("user metadata is larger than 2 KB (the S3 limit); store large values in the object")
    return out


def normalize_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """Object tags within S3's limits: at most 10, keys 1-128 and values 0-256 characters."""
    out = {str(k): str(v) for k, v in (tags or {}).items()}
    if len(out) > MAX_TAGS:
        raise InvalidMetadata(f"an object can have at most {MAX_TAGS} tags, got {len(out)}")
    for name, value in out.items():
        if not 1 <= len(name) <= 128 or len(value) > 256:
            raise InvalidMetadata(f"tag {name!r}: keys must be 1-128 and values 0-256 characters")
    return out


def validate_content_type(content_type: str | None) -> str | None:
    if content_type is not None and (not content_type or not _printable_ascii(content_type)):
        raise InvalidMetadata(f"content type {content_type!r} must be non-empty printable ASCII")
    return content_type


def _printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(ch) < 0x7F for ch in text)


def default_content_type(key: str) -> str:
    """The content type a put without one gets: guessed from the key's extension, as ``aws s3 cp`` does."""
    return mimetypes.guess_type(key, strict=False)[0] or "application/octet-stream"
