"""Key and bucket-name rules, with a property test: no accepted key can leave its bucket directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kawa.errors import InvalidBucketName, InvalidKey
from kawa.store.local import LocalStore
from kawa.store.naming import key_path, validate_bucket_name, validate_key
from tests.store.conftest import make_config

# Keys built from the characters that matter for escaping: separators, dots, NUL, backslash, unicode.
_pieces = [*"./\\\x00a-_ é~", "..", "\u202e", "\n"]
_segment = st.lists(st.sampled_from(_pieces), max_size=8).map("".join)
keys = st.one_of(
    st.lists(_segment, min_size=1, max_size=6).map("/".join),
    st.text(max_size=40),
)


@settings(max_examples=1500, deadline=None)
@given(keys)
def test_an_accepted_key_resolves_inside_the_bucket(key: str) -> None:
    root = Path("/srv/kawa/buckets/bucket-a")
    try:
        validate_key(key)
    except InvalidKey:
        return
    path = Path(os.path.normpath(key_path(root, key)))
    assert path.is_relative_to(root) and path != root
    assert path.relative_to(root).as_posix() == key  # nothing was normalised away: the key is the path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=keys)
def test_local_store_writes_accepted_keys_inside_the_bucket(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "root", make_config(tmp_path / ".kawa"))
    try:
        store.create_bucket("bucket-a", exist_ok=True)
        try:
            path = store.object_path("bucket-a", key)
        except InvalidKey:
            return
        bucket_dir = (tmp_path / "root" / "bucket-a").resolve()
        assert path.resolve().is_relative_to(bucket_dir)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("../etc/passwd", "'..' segment"),
        ("a/../../etc", "'..' segment"),
        ("/etc/passwd", "starts with '/'"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a//b", "empty segment"),
        ("x" * 1025, "1025 bytes"),
        ("a/" + "y" * 256, "longer than 255"),
    ],
)
def test_invalid_key_messages_say_why(key: str, why: str) -> None:
    with pytest.raises(InvalidKey, match=why):
        validate_key(key)


def test_unencodable_key() -> None:
    with pytest.raises(InvalidKey, match="UTF-8"):
        validate_key("bad\udcff")


@pytest.mark.parametrize("name", ["abc", "xray-images", "a.b-c", "0day", "a" * 63])
def test_good_bucket_names(name: str) -> None:
    assert validate_bucket_name(name) == name


def test_bucket_name_message_says_what_to_do() -> None:
    with pytest.raises(InvalidBucketName, match="Use 3-63 lower-case letters"):
        validate_bucket_name("X")


def test_symlink_out_of_the_bucket_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root", make_config(tmp_path / ".kawa"))
    store.create_bucket("bucket-a")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (tmp_path / "root" / "bucket-a" / "link").symlink_to(outside)
    with pytest.raises(InvalidKey, match="symbolic link"):
        store.put("bucket-a", "link/secret", b"overwrite")
    with pytest.raises(InvalidKey, match="symbolic link"):
        store.get("bucket-a", "link/secret")
    assert (outside / "secret").read_text() == "s"
    store.close()
