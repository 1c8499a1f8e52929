"""``kawa demo <app>``: the app's settings come from kawa.yaml, ``--settings`` and ``--set``, and a bad one is
named before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KAWA = str(Path(sys.executable).parent / "kawa")


def kawa(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([KAWA, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join(done.stderr.split())


def test_a_bad_setting_is_named_with_where_it_came_from(tmp_path: Path) -> None:
    done = kawa(tmp_path, "demo", "xray", "--no-portal", "--set", "partitions=0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the xray app's settings (kawa.yaml and --set) is not valid: partitions:" in one_line(done), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".kawa").exists()  # nothing was started


def test_a_settings_file_section_under_the_app_name_is_read(tmp_path: Path) -> None:
    (tmp_path / "xray.yaml").write_text("xray:\n  normal_below: 0.9\n  pneumonia_from: 0.5\n")
    done = kawa(tmp_path, "demo", "xray", "--no-portal", "--settings", "xray.yaml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "normal_below must be <= pneumonia_from" in one_line(done), done.stderr


def test_set_needs_key_equals_value_and_a_missing_settings_file_is_named(tmp_path: Path) -> None:
    done = kawa(tmp_path, "demo", "xray", "--set", "partitions")
    assert done.returncode == 1 and "write KEY=VALUE" in one_line(done), done.stderr
    missing = kawa(tmp_path, "demo", "xray", "--settings", "nowhere.yaml")
    assert missing.returncode == 1 and "settings file nowhere.yaml does not exist" in one_line(missing), missing.stderr
