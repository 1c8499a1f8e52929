"""``kawa demo sepsis`` as a user runs it: from nothing, it streams the simulated day, alerts, and stops on
Ctrl-C with a summary. The app is installed the way a package installs it (a ``kawa.apps`` entry point)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

KAWA = str(Path(sys.executable).parent / "kawa")

pytestmark = pytest.mark.timeout(180)


def installed(tmp_path: Path) -> str:
    """A directory holding only a dist-info whose entry point names the sepsis plugin."""
    dist = tmp_path / "site" / "kawa_sepsis-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kawa-sepsis\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kawa.apps]\nsepsis = kawa.apps.sepsis.plugin:plugin\n")
    return str(dist.parent)


def test_the_demo_starts_from_nothing_alerts_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    paths = [installed(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "120", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(paths)}  # fmt: skip
    proc = subprocess.Popen(
        [KAWA, "demo", "sepsis", "--no-portal", "--set", "speed=3600", "--set", "threshold=5",
         "--set", "history_admissions=150"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )  # fmt: skip
    assert proc.stdout is not None
    killer = threading.Timer(120, proc.kill)  # a hung demo fails the test instead of hanging it
    killer.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "first alert at simulated" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        killer.cancel()
    text = " ".join(("".join(lines) + out).split())
    assert proc.returncode == 0, text[-3000:]
    assert "Kawa sepsis demo" in text and "first alert at simulated day 1" in text, text[-3000:]
    baselines = r"matured baselines \(simulated history, on the board\): NEWS2 >= 5 PPV [\d.]+%"
    assert re.search(baselines, text), text[:3000]
    alerts = re.search(r"alerts │ (\d+) \(observation → alert p99", text)
    sent = re.search(r"sent │ ([\d,]+) Bundles", text)
    assert alerts is not None and sent is not None, text[-3000:]
    assert int(alerts.group(1)) >= 1 and int(sent.group(1).replace(",", "")) >= 1
    assert re.search(r"simulated │ [\d.]+ h of 24 h", text), text[-3000:]
    assert "sim-" not in text  # the demo prints pseudonyms only
