"""A fault-injecting HTTP/1.1 proxy between an S3 client and the moto server.

The proxy runs an asyncio server in a thread of its own on ``127.0.0.1:<free port>``. It
parses request boundaries (``Content-Length`` and ``Transfer-Encoding: chunked`` bodies)
so that it can count requests on keep-alive connections and apply faults to chosen ones,
and copies responses back byte for byte. Faults are rules, consumed in order by the
requests they match (``match`` is a substring of ``"METHOD target"``):

* ``fail_next(n, status, code)``: answer an S3 XML error without forwarding;
* ``reset_after(k, times)``: forward ``k`` bytes of the request, then reset (RST) the
  client connection, as a dropped connection does mid-upload;
* ``cut_response_after(k, times)``: forward the request, then reset the client after
  ``k`` bytes of the response (``k=0``: the server did the work, the answer was lost);
* ``stall_next(n)``: swallow the request and never answer, until the client gives up;
* ``corrupt_next(n, at)``: forward the request with one body byte flipped (byte ``at`` of
  the body as sent: a bit error a TCP checksum missed, or a broken middlebox);
* ``rewrite_status(status, times)``: forward the request, then answer ``status`` (the
  server did the work: a 500 after storing);
* ``rewrite_header(name, value, times)``: forward the request, then set the answer's
  header ``name`` to ``value`` (an answer no emulator gives: Azure's pending copy);
* ``refuse()`` / ``restore()``: stop listening (and reset open connections), as a
  server that is down; then listen again on the same port.

Every method is thread-safe: tests call them from their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import struct
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

_WAIT = 10.0  # seconds any control call may take before the test fails
_STALL_LIMIT = 60.0  # a stalled request is released after this, whatever the client does


@dataclass
class _Rule:
    kind: str  # "fail", "reset", "cut", "stall", "corrupt", "rewrite"
    times: int
    match: str
    status: int = 503
    code: str = "SlowDown"
    after: int = 0
    header: tuple[str, str] = ("", "")


@dataclass
class _Request:
    line: str  # "METHOD target"
    headers: dict[str, str]
    head: bytes

    @property
    def method(self) -> str:
        return self.line.split(" ", 1)[0]


class FaultProxy:
    """Forward to ``upstream`` (``http://host:port``), injecting the faults asked for."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        assert parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._log: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_WAIT)
        self._loop.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(_WAIT)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            _reset(writer)

    async def _shutdown(self) -> None:
        await self._close_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_WAIT)

    # ------------------------------------------------------------ control API

    def fail_next(
        self, n: int = 1, *, status: int = 503, code: str = "SlowDown", match: str = ""
    ) -> None:
        """Answer the next ``n`` matching requests with an S3 error, without forwarding."""
        self._add(_Rule("fail", n, match, status=status, code=code))

    def reset_after(self, k_bytes: int, *, times: int = 1, match: str = "") -> None:
        """Reset the connection after ``k_bytes`` of each of the next ``times`` requests."""
        self._add(_Rule("reset", times, match, after=k_bytes))

    def cut_response_after(self, k_bytes: int, *, times: int = 1, match: str = "") -> None:
        """Forward the next matching requests, then reset after ``k_bytes`` of the answer."""
        self._add(_Rule("cut", times, match, after=k_bytes))

    def stall_next(self, n: int = 1, *, match: str = "") -> None:
        """Never answer the next ``n`` matching requests (the client's read timeout fires)."""
        self._add(_Rule("stall", n, match))

    def corrupt_next(self, n: int = 1, *, at: int = 0, match: str = "") -> None:
        """Forward the next ``n`` matching requests with body byte ``at`` flipped."""
        self._add(_Rule("corrupt", n, match, after=at))

    def rewrite_header(self, name: str, value: str, *, times: int = 1, match: str = "") -> None:
        """Forward the next matching requests; in their answers, set header ``name``."""
        self._add(_Rule("rewrite", times, match, header=(name, value)))

    def rewrite_status(self, status: str, *, times: int = 1, match: str = "") -> None:
        """Forward the next matching requests (the server does the work); answer them
        with ``status`` ("500 Internal Server Error") instead of the server's."""
        self._add(_Rule("rewrite", times, match, header=(STATUS_LINE, status)))

    def refuse(self) -> None:
        """Stop listening and reset every open connection: the server is down."""
        self._call(self._close_all())

    def restore(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._call(self._listen())

    def clear(self) -> None:
        """Forget pending faults and the request log."""
        with self._lock:
            self._rules.clear()
            self._log.clear()

    @property
    def requests(self) -> list[str]:
        """Every request seen so far, as ``"METHOD target"``, faulted ones included."""
        with self._lock:
            return list(self._log)

    def count(self, match: str = "") -> int:
        """How many requests seen so far contain ``match``."""
        return sum(match in line for line in self.requests)

    def pending(self) -> int:
        """How many faults are still to be injected."""
        with self._lock:
            return sum(rule.times for rule in self._rules)

    def _add(self, rule: _Rule) -> None:
        assert rule.times >= 1
        with self._lock:
            self._rules.append(rule)

    def _take(self, line: str) -> _Rule | None:
        with self._lock:
            self._log.append(line)
            for rule in self._rules:
                if rule.match in line:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                    return rule
        return None

    # ------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._clients.add(writer)
        upstream: _Upstream | None = None
        try:
            while True:
                request = await _read_head(reader)
                if request is None:
                    return
                rule = self._take(request.line)
                kind = rule.kind if rule is not None else "forward"
                if kind == "fail":
                    assert rule is not None
                    if not await self._fail(reader, writer, request, rule):
                        return
                    continue
                if kind == "stall":
                    await _drain_body(reader, request.headers, None)
                    with contextlib.suppress(TimeoutError, ConnectionError):
                        await asyncio.wait_for(reader.read(), _STALL_LIMIT)
                    return
                if upstream is None:
                    upstream = await _Upstream.open(self._upstream, writer)
                if kind == "reset":
                    assert rule is not None
                    await upstream.forward_until(reader, request, rule.after)
                    _reset(writer)
                    return
                if kind == "cut":
                    assert rule is not None
                    upstream.cut_after = rule.after
                if kind == "rewrite":
                    assert rule is not None
                    upstream.rewrite = rule.header
                if kind == "corrupt":
                    assert rule is not None
                    await upstream.forward(reader, request, flip_at=rule.after)
                    continue
                await upstream.forward(reader, request)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._clients.discard(writer)
            if upstream is not None:
                await upstream.close()
            writer.close()
            self._tasks.discard(task)

    async def _fail(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: _Request,
        rule: _Rule,
    ) -> bool:
        """Answer an S3 error; True when the connection stays usable."""
        # a client waiting for "100 Continue" never sends the body: answer and close
        keep = request.headers.get("expect", "").lower() != "100-continue"
        if keep:
            await _drain_body(reader, request.headers, None)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{rule.code}</Code><Message>injected by the test proxy</Message>"
            "<RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        phrase = http.HTTPStatus(rule.status).phrase
        head = (
            f"HTTP/1.1 {rule.status} {phrase}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            "x-amz-request-id: fault-proxy\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        writer.write(head if request.method == "HEAD" else head + body)
        await writer.drain()
        return keep


class _Upstream:
    """One connection to the server, with a task copying its answers to the client."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.client = client
        self.cut_after: int | None = None
        self.rewrite: tuple[str, str] | None = None  # a header of the next answer's head
        self.pump = asyncio.create_task(self._pump())

    @classmethod
    async def open(cls, address: tuple[str, int], client: asyncio.StreamWriter) -> _Upstream:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer, client)

    async def _pump(self) -> None:
        try:
            head = b""
            while data := await self.reader.read(65536):
                if self.rewrite is not None:
                    head += data
                    if b"\r\n\r\n" not in head:
                        continue
                    data, head = _with_header(head, *self.rewrite), b""
                    self.rewrite = None
                if self.cut_after is not None:
                    if len(data) >= self.cut_after:
                        self.client.write(data[: self.cut_after])
                        with contextlib.suppress(ConnectionError):
                            await self.client.drain()
                        _reset(self.client)
                        return
                    self.cut_after -= len(data)
                self.client.write(data)
                await self.client.drain()
        except ConnectionError:
            pass
        finally:
            # the server closed (or the client went): the client's connection ends too
            self.client.close()

    async def forward(
        self, reader: asyncio.StreamReader, request: _Request, flip_at: int | None = None
    ) -> None:
        self.writer.write(request.head)
        sink = self.writer if flip_at is None else _Flip(self.writer, flip_at)
        await _drain_body(reader, request.headers, sink)
        await self.writer.drain()

    async def forward_until(
        self, reader: asyncio.StreamReader, request: _Request, limit: int
    ) -> None:
        """Forward at most ``limit`` bytes of the request (head included)."""
        budget = _Budget(self.writer, limit)
        with contextlib.suppress(_Stop):
            await budget.send(request.head)
            await _drain_body(reader, request.headers, budget)

    async def close(self) -> None:
        self.pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self.pump
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


#: the "header" a rewrite_status rule sets: the answer's status line
STATUS_LINE = ":status"


def _with_header(answer: bytes, name: str, value: str) -> bytes:
    """``answer`` (its head whole) with header ``name`` set to ``value`` (or its status
    line, for :data:`STATUS_LINE`)."""
    if name == STATUS_LINE:
        _, rest = answer.split(b"\r\n", 1)
        return f"HTTP/1.1 {value}\r\n".encode() + rest
    head, body = answer.split(b"\r\n\r\n", 1)
    lines = [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith(name.lower().encode() + b":")
    ]
    lines.append(f"{name}: {value}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Budget:
    """A writer that forwards up to ``left`` bytes, then stops the request (raises)."""

    def __init__(self, writer: asyncio.StreamWriter, left: int) -> None:
        self.writer = writer
        self.left = left

    async def send(self, data: bytes) -> None:
        self.writer.write(data[: self.left])
        await self.writer.drain()
        self.left -= min(len(data), self.left)
        if self.left == 0:
            raise _Stop


class _Stop(Exception):
    pass


class _Flip:
    """A writer that inverts the byte at offset ``at`` of what passes through it."""

    def __init__(self, writer: asyncio.StreamWriter, at: int) -> None:
        self.writer = writer
        self.at = at

    async def send(self, data: bytes) -> None:
        if 0 <= self.at < len(data):
            data = data[: self.at] + bytes([data[self.at] ^ 0xFF]) + data[self.at + 1 :]
        self.at -= len(data)
        self.writer.write(data)
        await self.writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return _Request(f"{method} {target}", headers, head)


async def _drain_body(
    reader: asyncio.StreamReader,
    headers: dict[str, str],
    sink: asyncio.StreamWriter | _Budget | _Flip | None,
) -> None:
    """Read the request body off ``reader``, passing it to ``sink`` (``None``: discard)."""

    async def emit(data: bytes) -> None:
        if isinstance(sink, _Budget | _Flip):
            await sink.send(data)
        elif sink is not None:
            sink.write(data)
            await sink.drain()

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            await emit(size_line)
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    await emit(trailer)
                await emit(trailer)
                return
            await emit(await reader.readexactly(size + 2))
    left = int(headers.get("content-length", "0"))
    while left > 0:
        data = await reader.read(min(left, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", left)
        left -= len(data)
        await emit(data)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
