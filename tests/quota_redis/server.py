"""A throwaway ``redis-server`` on a free loopback port, persistence off."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0  # seconds: a cold start on a busy CI machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """Starts, stops and restarts one ``redis-server`` process (its data dies with it)."""

    def __init__(
        self, workdir: Path, password: str | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.tls = tls  # (certificate, key): TLS only, no plain port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        args = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            cert, key = self.tls
            args[3:5] = ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer within the start timeout")
            time.sleep(0.02)  # polling a starting server, not synchronizing a test

    def _answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
        ):
            if self.tls is None:
                return self._pong(raw)
            context = ssl.create_default_context(cafile=str(self.tls[0]))
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                return self._pong(sock)
        return False

    @staticmethod
    def _pong(sock: socket.socket) -> bool:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))

    def info(self, section: str) -> str:
        """``INFO <section>``, sent inline on a connection of its own (no client library,
        whose own commands could count in the stats read); plain servers only."""
        assert self.tls is None, "a plain server"
        assert self.password is None, "a server without AUTH"
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(f"INFO {section}\r\n".encode())
            reply = b""
            while b"\r\n" not in reply or len(reply) < reply.index(b"\r\n") + 2 + int(
                reply[1 : reply.index(b"\r\n")]
            ):
                reply += sock.recv(65536)
        return reply.split(b"\r\n", 1)[1].decode()

    def connected(self, settled: int) -> int:
        """Clients connected now (the one asking included), once that number is
        ``settled``, or what it is after a few seconds: a connection closed just now
        ends in the server a moment later."""
        deadline = time.monotonic() + 5
        while True:
            found = re.search(r"connected_clients:(\d+)", self.info("clients"))
            assert found is not None
            count = int(found.group(1))
            if count == settled or time.monotonic() > deadline:
                return count
            time.sleep(0.01)  # polling the server's count, bounded by the deadline

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
