"""Secret keys for keyed hashing (HMAC pseudonyms, UID remapping, date shifts).

``load_key(path)`` reads a key file, creating it (32 random bytes, mode 0600) when absent; two processes
racing to create it end up with the same key. Every worker that must produce the same pseudonyms — all
replicas of a route, the X-ray app and its re-runs — must read the same key file: in a distributed
deployment, mount one shared secret and name it with the processor's ``key-file`` option.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from kawa.errors import RouteError

KEY_BYTES = 32


def load_key(path: Path | str) -> bytes:
    """The key in ``path`` (created on first use)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_bytes(secrets.token_bytes(KEY_BYTES))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, file)  # atomic, fails if another process won the race
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        data = file.read_bytes()
    except OSError as exc:
        raise RouteError(f"cannot read key file {file}: {exc}") from exc
    if len(data) < 16:
        raise RouteError(f"key file {file} holds {len(data)} bytes; a key needs at least 16 (delete it to regenerate)")
    return data


def as_key(key: bytes | str) -> bytes:
    """Keys given in code: bytes as is, text as UTF-8 (at least 16 bytes)."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < 16:
        raise RouteError("a de-identification key needs at least 16 bytes; use a long random secret")
    return raw
