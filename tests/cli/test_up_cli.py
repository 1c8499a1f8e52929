"""``kawa up`` tells a newcomer where the portal is and how to sign in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

KAWA = str(Path(sys.executable).parent / "kawa")


def wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float) -> tuple[re.Match[str] | None, str]:
    """Read ``proc``'s output until a line matches ``pattern`` (or the deadline passes); the match and the text."""
    seen: list[str] = []
    found: list[re.Match[str]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            match = re.search(pattern, line)
            if match is not None:
                found.append(match)
                ready.set()
                return
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout)
    return (found[0] if found else None), "".join(seen)


def test_up_prints_the_portal_url_that_serves_the_sign_in_page_and_how_to_sign_in(tmp_path: Path) -> None:
    env = {**os.environ, "KAWA_PORTAL__PORT": "0", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [KAWA, "up"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        match, text = wait_for_line(proc, r"portal: (http://[\w.\[\]:]+:\d+) — (.*)", timeout=90)
        assert match is not None, text
        assert "kawa users add admin --role admin" in match.group(2), text
        with urllib.request.urlopen(f"{match.group(1)}/login", timeout=10) as page:
            assert page.status == 200 and b"password" in page.read().lower()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out
