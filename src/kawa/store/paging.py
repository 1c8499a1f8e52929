"""Listing pages for the backends that list themselves (local, memory): S3 semantics, opaque tokens."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from kawa.errors import StoreError


def select_page(
    keys: Iterable[str], *, prefix: str, start_after: str | None, continuation_token: str | None, max_keys: int
) -> tuple[list[str], str | None]:
    """The keys of one page, in UTF-8 byte order (= code-point order), and the token of the next page.

    As in S3's ListObjectsV2, a page starts after ``start_after`` and after the key the token names.
    """
    check_max_keys(max_keys)
    after = start_after or ""
    if continuation_token:
        after = max(after, decode_token(continuation_token))
    ordered = sorted(k for k in keys if k.startswith(prefix) and k > after)
    page = ordered[:max_keys]
    return page, (encode_token(page[-1]) if len(ordered) > max_keys else None)


def check_max_keys(max_keys: int) -> None:
    if not 1 <= max_keys <= 1000:
        raise StoreError(f"max_keys must be between 1 and 1000, got {max_keys}")


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise StoreError(
            f"continuation token {token!r} is not one this store issued; start the listing again"
        ) from None
