"""``kawa demo xray`` as a user runs it: a fresh directory, nothing prepared, then a second run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

KAWA = str(Path(sys.executable).parent / "kawa")

pytestmark = pytest.mark.timeout(300)


def demo(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [KAWA, "demo", "xray", "--rate", "15", "--train-images", "200", "--no-portal", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "120"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return " ".join(done.stdout.split())  # the terminal width wraps lines


def test_demo_is_listed_for_scripts_demo_sh() -> None:
    out = subprocess.run([KAWA, "demo", "--help"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^\W*xray\s", out, re.MULTILINE), out


def test_fresh_run_trains_uploads_and_agrees_then_a_second_run_reuses_the_model(tmp_path: Path) -> None:
    first = demo(tmp_path, "--duration", "4")
    assert "no model at pneumonia@champion" in first and "trained pneumonia v1" in first
    assert "promoted to champion" in first
    assert "✓ counts agree" in first, first
    uploaded = int(re.search(r"uploaded │ (\d+) objects", first).group(1))  # type: ignore[union-attr]
    assert uploaded >= 40
    assert (tmp_path / ".kawa" / "xray" / "results.db").exists()

    second = demo(tmp_path, "--duration", "2", "--corrupt", "0.2")
    assert "model pneumonia@champion → version 1" in second and "trained" not in second
    assert "✓ counts agree" in second, second  # counted for this run only, though the buckets hold both
    damaged = int(re.search(r"\((\d+) images, (\d+) damaged\)", second).group(2))  # type: ignore[union-attr]
    assert damaged >= 1
