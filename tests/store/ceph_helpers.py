"""What the Ceph tests share: ``kawa ingress`` as a real process on a socket that outlives it, and reading the
events of a topic by key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from kawa.events import from_record
from kawa.events.s3 import parse_records
from kawa.log import EventLog
from kawa.log.base import Record
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


class IngressProcess:
    """``kawa ingress --fd N`` in its own process, serving a listening socket this object keeps open.

    Between :meth:`stop` and :meth:`start` the socket still accepts connections into its backlog (as with
    systemd socket activation), so the RGW's deliveries wait instead of being refused."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.set_inheritable(True)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        fd = self.sock.fileno()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kawa.cli", "--config", str(self.config_path), "ingress", "--fd", str(fd)],
                stdout=out, stderr=subprocess.STDOUT, pass_fds=(fd,), env=env,
            )
        proc = self.proc

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"kawa ingress exited with {proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(answers, timeout, "kawa ingress to answer on /health", interval=0.1)

    def stop(self) -> None:
        """SIGTERM: requests in flight finish (each after the log acknowledged), then the process exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash: a delivery in flight is cut off (the RGW sends it again)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.sock.close()


class TopicReader:
    """Reads a topic from the beginning, keeping every record; ``keys()`` maps object key → CloudEvent ids."""

    def __init__(self, log: EventLog, topic: str) -> None:
        self.consumer = log.consumer(f"reader-{uuid.uuid4().hex[:8]}", [topic], auto_offset_reset="earliest")
        self.records: list[Record] = []

    def poll(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.records.extend(self.consumer.poll(timeout=0.1))

    def keys(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for record in self.records:
            event = from_record(record)
            for parsed in parse_records(record):
                seen.setdefault(parsed.key, set()).add(event.get_id())
        return seen

    def wait_for_keys(self, want: set[str], timeout: float) -> dict[str, set[str]]:
        deadline = time.monotonic() + timeout
        while not want <= set(self.keys()):
            if time.monotonic() > deadline:
                missing = sorted(want - set(self.keys()))
                raise AssertionError(f"timed out after {timeout:g} s: no event on the log for {missing}")
            self.poll(0.5)
        return self.keys()

    def close(self) -> None:
        self.consumer.close()
