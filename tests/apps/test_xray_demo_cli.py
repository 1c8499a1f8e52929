"""``kawa demo xray`` as a user runs it: a fresh directory, nothing prepared, then a second run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
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


def test_fresh_run_trains_uploads_and_agrees_then_reruns_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    first = demo(tmp_path, "--duration", "4")
    assert "no model at pneumonia@champion" in first and "trained pneumonia v1" in first, first
    assert "promoted to champion" in first, first
    assert "✓ counts agree" in first, first
    uploaded = int(re.search(r"uploaded │ (\d+) objects", first).group(1))  # type: ignore[union-attr]
    assert uploaded >= 20, first  # 4 s at 15/s
    assert (tmp_path / ".kawa" / "xray" / "results.db").exists()

    second = demo(tmp_path, "--duration", "2", "--corrupt", "0.2")
    assert "model pneumonia@champion → version 1" in second and "trained" not in second, second
    assert "✓ counts agree" in second, second  # counted for this run only, though the buckets hold both
    damaged = int(re.search(r"\((\d+) images, (\d+) damaged\)", second).group(2))  # type: ignore[union-attr]
    assert damaged >= 1, second
    third = interrupted(tmp_path, signal.SIGINT)
    assert "✓ counts agree" in third, third  # Ctrl-C: uploads stop, in-flight images finish, summary agrees


def interrupted(cwd: Path, sig: signal.Signals) -> str:
    """Run the demo without a duration and stop it with ``sig`` once it is uploading."""
    proc = subprocess.Popen(
        [KAWA, "demo", "xray", "--rate", "15", "--no-portal"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "120", "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "uploading to" in line:
            break
    time.sleep(3)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + out
    return " ".join(("".join(lines) + out).split())
