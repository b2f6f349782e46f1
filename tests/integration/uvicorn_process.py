"""``uvicorn module:app`` as a user runs it: its own process, uvicorn's default logging.

The in-thread server of conftest.py leaves logging alone (``log_config=None``), so it
cannot show what a plain ``uvicorn app:app`` prints; these tests read the real stderr.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def uvicorn_command(app: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without STORAGE_*/AWS_* (already scrubbed) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "AWS_"))}
    env.update(extra)
    return env


class UvicornProcess:
    """A ``python -m uvicorn`` child on 127.0.0.1; ``stop()`` returns all it wrote to stderr."""

    def __init__(self, app: str, env: Mapping[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = cwd / f"uvicorn-{self.port}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            uvicorn_command(app, self.port),
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}: {self.stop()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                # a bounded poll of another process: nothing to await across processes
                time.sleep(0.05)
        raise TimeoutError(f"uvicorn did not listen in {START_TIMEOUT} s: {self.stop()}")

    def stop(self) -> str:
        """Stop it (Ctrl-C, as a user would) and return its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: uvicorn's graceful shutdown
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")
