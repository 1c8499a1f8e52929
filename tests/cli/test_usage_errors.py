"""Mistakes at the shell, as a newcomer makes them: one line that says what to try, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KAWA = str(Path(sys.executable).parent / "kawa")  # the installed entry point, as a user runs it


def kawa(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([KAWA, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    ("args", "says", "hint"),
    [
        (["frobnicate"], "no such command 'frobnicate'", "Try 'kawa --help'"),
        (["put"], "missing argument 'bucket'", "Try 'kawa put --help'"),
        (["topics", "create", "orders", "--partitionz", "3"], "no such option: --partitionz", "--partitions"),
        (["topics", "create", "orders", "--partitions", "many"], "invalid value for '--partitions'", "--help"),
        (["--bogus", "topics", "list"], "no such option: --bogus", "Try 'kawa --help'"),
        (["demo", "xray", "--durration", "60"], "no such option: --durration", "Try 'kawa demo xray --help'"),
    ],
)
def test_usage_error_is_one_line_with_the_hint_and_exit_2(
    tmp_path: Path, args: list[str], says: str, hint: str
) -> None:
    done = kawa(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    assert says in lines[0] and hint in done.stderr, done.stderr
    assert lines[0].startswith("kawa"), done.stderr


def test_kawa_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = kawa(tmp_path, "topics", "describe", "nope")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "does not exist" in lines[0] and "kawa topics create nope" in lines[0], done.stderr


def test_kawa_alone_shows_the_commands(tmp_path: Path) -> None:
    done = kawa(tmp_path)
    assert "Traceback" not in done.stdout + done.stderr
    assert "demo" in done.stdout + done.stderr and "topics" in done.stdout + done.stderr
