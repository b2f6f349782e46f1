"""The Redis ledger's connection: one per event loop, its scripts pipelined on it.

The ``redis`` client opens the connection (URL, TLS, AUTH, SELECT: everything a
``redis://``, ``rediss://`` or ``unix://`` URL can say), then the ledger speaks to it
itself: each script call is one ``EVALSHA`` packed once into bytes and written at once
(the first on a connection after ``SCRIPT LOAD`` of its text, in the same write), with
any number of calls in flight on the one connection, their replies matched in order as
they arrive. Measured on 2 cores, a call costs ~30 µs of client CPU this way
against ~140-160 µs through ``redis.asyncio.Redis`` (its pool, locks and parser per
command), which was most of what a quota costs a local save.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import os
import re
import threading
import time
import weakref
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from file_storage._loops import ShutdownHook

Reply = str | int | list[Any] | None


class RedisUnavailable(Exception):
    """Redis could not be reached: translated by the caller (fail closed or open)."""


class RedisTimeout(RedisUnavailable):
    """Redis did not answer in time (connected, or not): calls fail at once for a while."""


def url_problem(url: str, redis: ModuleType) -> str | None:
    """What is wrong with a Redis URL, parsed as the client will parse it, or ``None``.

    Checked when the backend is built, so that a typo fails at start-up, not at the first
    write as the client's ``ValueError``. The answer never quotes the URL (its password).
    """
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is no number or out of range
        redis.asyncio.connection.parse_url(url)
    except (TypeError, ValueError):
        return "is not a valid Redis URL (check the host, port and query options)"
    if parts.scheme.lower() == "unix":
        if not parts.path.strip("/"):
            return "a unix:// URL needs the socket's path: unix:///path/to/redis.sock"
        return None
    database = unquote(parts.path).strip("/")
    if database and "db" not in parse_qs(parts.query) and not re.fullmatch("[0-9]+", database):
        # the client would silently use database 0
        return "the path must be a database number such as /0"
    return None


class _ReplyError(Exception):
    """An error reply (``-ERR ...``): the message's first word is the code."""


def _pack_args(args: list[object], start: int = 0) -> bytes:
    """``args[start:]`` in RESP (``$<len>`` and the bytes of each), built as one string
    and encoded once when all are ASCII: half the cost of packing them one by one."""
    parts = []
    for j in range(start, len(args)):
        arg = args[j]
        if arg.__class__ is not str:
            if arg.__class__ is not int:  # (not a bool either)
                raise TypeError(f"a Redis argument is str or int, not {type(arg).__name__}")
            arg = str(arg)
        assert isinstance(arg, str)
        if not arg.isascii():
            return b"".join(_pack_one(args[k]) for k in range(start, len(args)))
        parts.append(f"${len(arg)}\r\n{arg}\r\n")
    return "".join(parts).encode()


def _pack_one(arg: object) -> bytes:
    data = arg.encode() if isinstance(arg, str) else str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(args: list[object]) -> bytes:
    """One command in RESP: ``*<n>`` then each argument."""
    return b"*%d\r\n" % len(args) + _pack_args(args)


class Script:
    """A Lua script and its SHA1."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


def _parse(buf: bytes, i: int) -> tuple[Reply | _ReplyError, int] | None:
    """One RESP2 reply at ``buf[i:]`` and where it ends, or ``None`` when incomplete."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        return None
    kind = buf[i]
    line = buf[i + 1 : j]
    i = j + 2
    if kind == 0x24:  # $ bulk string
        n = int(line)
        if n < 0:
            return None, i
        if len(buf) < i + n + 2:
            return None
        return buf[i : i + n].decode(), i + n + 2
    if kind == 0x2A:  # * array
        n = int(line)
        if n < 0:
            return None, i
        items: list[Any] = []
        for _ in range(n):
            found = _parse(buf, i)
            if found is None:
                return None
            item, i = found
            items.append(item)
        return items, i
    if kind == 0x3A:  # : integer
        return int(line), i
    if kind == 0x2B:  # + simple string
        return line.decode(), i
    if kind == 0x5F:  # _ null (RESP3, should a server answer in it)
        return None, i
    if kind == 0x2D:  # - error
        return _ReplyError(line.decode(errors="replace")), i
    raise ValueError("not a RESP2 reply")


class _Wire(asyncio.Protocol):
    """The protocol of one connection: replies resolve the waiting calls in order."""

    def __init__(self, timeout: float, writer: asyncio.StreamWriter) -> None:
        self._timeout = timeout
        self._writer = writer
        self._buf = b""
        # each call's future and when it was written (its timeout runs from then)
        self._waiting: collections.deque[list[Any]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: RedisUnavailable | None = None
        # the SHAs of the scripts sent with SCRIPT LOAD on this connection
        self.scripts: set[str] = set()
        self.hook: ShutdownHook | None = None  # closes it as its loop shuts down

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes) -> asyncio.Future[Any]:
        if self.lost is not None or self.transport is None:
            raise RedisUnavailable("connection lost")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append([future, None])  # (stamped as it is written)
        # the calls made in one pass of the loop leave in one write: on a busy machine a
        # send to a local Redis costs far more than its bytes (the syscall wakes the server)
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(data)
        if self._timer is None:
            self._timer = loop.call_later(self._timeout, self._check_timeout)
        return future

    def _flush(self) -> None:
        out, self._out = self._out, []
        # Redis is judged silent from when a call left, not from when it was made: the
        # loop may have been held in between (a blocking call of the app, a GC pause) for
        # longer than the timeout, and the timer, due by then, runs before the reply
        # can be read (a call timed out is then every call failing for a timeout more)
        now = time.monotonic()
        for entry in reversed(self._waiting):
            if entry[1] is not None:
                break
            entry[1] = now
        if self.transport is not None and self.lost is None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        sent = self._waiting[0][1]
        age = 0.0 if sent is None else time.monotonic() - sent
        if age >= self._timeout:
            self._fail(RedisTimeout("TimeoutError"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout - age, self._check_timeout)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        i = 0
        waiting = self._waiting
        try:
            while i < len(buf) and waiting:
                found = _parse(buf, i)
                if found is None:
                    break
                reply, i = found
                future = waiting.popleft()[0]
                if not future.done():
                    if isinstance(reply, _ReplyError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except ValueError:
            self._fail(RedisUnavailable("protocol error"))
            return
        self._buf = buf[i:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisUnavailable(type(exc).__name__ if exc else "connection closed"))

    def _fail(self, error: RedisUnavailable) -> None:
        if self.lost is None:
            self.lost = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(type(error)(str(error)))
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._fail(RedisUnavailable("closed"))

    def disown(self) -> None:
        """A forked child's copy of the parent's connection: its descriptor now points at
        ``/dev/null`` (the parent's connection ends when the parent closes it, and the
        number stays valid for whatever closes it later), nothing is sent or read."""
        self.lost = RedisUnavailable("connection of the parent process")
        self._waiting.clear()
        self._out = []
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None or sock.fileno() < 0:
            return
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, sock.fileno())
        finally:
            os.close(null)


async def _load_and_run(wire: _Wire, script: Script, call: bytes) -> Any:
    """``call`` (an ``EVALSHA`` of ``script``) after ``SCRIPT LOAD`` of its text, both in
    one write: no round trip more, and no ``NOSCRIPT`` error reply, which Redis counts in
    the error stats operators alert on (``errorstat_NOSCRIPT``, ``failed_calls``)."""
    wire.scripts.add(script.sha)  # calls made after this one queue behind the load
    load = wire.send(pack(["SCRIPT", "LOAD", script.text]))
    ran = wire.send(call)
    try:
        sha = await load
    except _ReplyError:
        sha = script.sha  # refused (an ACL without SCRIPT?): EVALSHA's NOSCRIPT sends the text
    except BaseException:
        _drop(ran)
        raise
    if sha != script.sha:  # the replies are not those of these calls
        wire.close()
        _drop(ran)
        raise RedisUnavailable("protocol error")
    return await ran


def _drop(future: asyncio.Future[Any]) -> None:
    """A call whose reply no one waits for any more: its error is not logged as lost."""
    if not future.cancel() and not future.cancelled():
        future.exception()


def _copy_to(answer: asyncio.Future[Any], step: asyncio.Future[Any]) -> None:
    if answer.done():
        if not step.cancelled():
            step.exception()
    elif step.cancelled():
        answer.cancel()
    elif step.exception() is not None:
        answer.set_exception(step.exception())  # type: ignore[arg-type]
    else:
        answer.set_result(step.result())


class Client:
    """The connection of each event loop and the scripts called on it."""

    def __init__(self, url: SecretStr, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        # one connection per loop (a loop per thread may share the backend)
        self._wires: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wire] = (
            weakref.WeakKeyDictionary()
        )
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Future[_Wire]] = {}
        # the loops of other threads add and drop theirs at once: no sweep sees a change
        self._wires_lock = threading.Lock()
        self._heads: dict[tuple[str, int, object], bytes] = {}
        # after a call timed out (Redis accepts and never answers: a partition, a stalled
        # server), calls fail at once until then: each would wait a whole timeout more
        self._quiet_until = 0.0

    def forked(self) -> None:
        """In a forked child: never use the parent's connections. Their replies are read
        by whichever process reads first (calls of both would get each other's answers);
        the child's copies of their sockets are let go, nothing sent on them."""
        for wire in list(self._wires.values()):
            wire.disown()
        self._wires = weakref.WeakKeyDictionary()
        self._wires_lock = threading.Lock()  # (another thread may have held it at the fork)
        self._opening = {}

    @property
    def quiet(self) -> bool:
        """A call timed out just now: calls fail at once, without asking Redis."""
        return time.monotonic() < self._quiet_until

    def _check_quiet(self) -> None:
        if self.quiet:
            raise RedisTimeout("TimeoutError (a call timed out just now)")
        self._quiet_until = 0.0  # over: the next call asks Redis again

    def _timed_out(self, exc: RedisUnavailable) -> None:
        if isinstance(exc, RedisTimeout):
            self._quiet_until = time.monotonic() + self._timeout

    async def _connect(self) -> _Wire:
        from file_storage._quota.redis.build import load_redis

        redis = load_redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        pool = redis.asyncio.ConnectionPool.from_url(
            self._url.get_secret_value(),
            socket_connect_timeout=self._timeout,
            socket_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # the replies _parse reads (a newer client may default to RESP3)
        )
        conn = pool.make_connection()
        # no CLIENT SETINFO (it only names the client library in CLIENT LIST): two round
        # trips per connection, each an error reply from a Redis before 7.2, which counts
        # them in the error stats operators alert on (redis 5-7: lib_*; 8: driver_info)
        for name in ("driver_info", "lib_name", "lib_version"):
            if hasattr(conn, name):
                setattr(conn, name, None)
        try:
            await conn.connect()  # TLS, AUTH, SELECT as the URL says
        except (redis.RedisError, OSError) as exc:
            # the message names host and port at most; never the URL (its password)
            if isinstance(exc, (redis.TimeoutError, TimeoutError)):
                raise RedisTimeout(type(exc).__name__) from exc
            raise RedisUnavailable(type(exc).__name__) from exc
        writer = getattr(conn, "_writer", None)
        if not isinstance(writer, asyncio.StreamWriter):  # pragma: no cover
            raise RuntimeError("this version of the redis client keeps no stream writer")
        # the connection is ours from here: the redis Connection forgets it (it would
        # close it when collected), the wire keeps its writer (which would too)
        conn._writer = conn._reader = None
        wire = _Wire(self._timeout, writer)
        transport = writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.set_protocol(wire)
        wire.connection_made(transport)
        loop = asyncio.get_running_loop()
        with self._wires_lock:
            self._forget_closed_loops()
            self._wires[loop] = wire
        # closed with its loop (asyncio.run finalizes async generators before closing
        # it): else each loop of a script or worker leaves a connection open in Redis
        wire.hook = ShutdownHook(functools.partial(self._loop_ends, loop, wire))
        await wire.hook.arm()
        return wire

    async def _loop_ends(self, loop: asyncio.AbstractEventLoop, wire: _Wire) -> None:
        with self._wires_lock:
            if self._wires.get(loop) is wire:
                del self._wires[loop]  # (it refers to its loop: else the loop is never freed)
        wire.close()

    def _forget_closed_loops(self) -> None:
        # closed without shutdown_asyncgens() (asyncio.run always calls it): a connection
        # no call can use any more, dropped (its socket is closed as it is collected)
        for loop in [loop for loop in self._wires if loop.is_closed()]:
            self._wires.pop(loop, None)

    async def _wire(self) -> _Wire:
        loop = asyncio.get_running_loop()
        wire = self._wires.get(loop)
        if wire is not None and wire.lost is None:
            return wire
        opening = self._opening.get(loop)
        if opening is not None:  # another call of this loop is connecting: share it
            return await asyncio.shield(opening)
        future: asyncio.Future[_Wire] = loop.create_future()
        self._opening[loop] = future
        try:
            wire = await self._connect()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when no other call waited
            raise
        finally:
            self._opening.pop(loop, None)
        future.set_result(wire)
        return wire

    async def call(self, *args: object) -> Any:
        """One plain command (``HKEYS``...)."""
        if self._quiet_until:
            self._check_quiet()
        try:
            wire = await self._wire()
            return await wire.send(pack(list(args)))
        except _ReplyError as exc:
            raise RedisUnavailable(str(exc).split(" ", 1)[0]) from exc
        except RedisUnavailable as exc:
            self._timed_out(exc)
            raise

    def _evalsha(self, script: Script, args: list[object]) -> bytes:
        # the head (EVALSHA, the SHA, no keys, the namespace) is packed once per script
        head_key = (script.sha, len(args), args[0])
        head = self._heads.get(head_key)
        if head is None:
            head = b"*%d\r\n" % (len(args) + 3)
            head += _pack_args(["EVALSHA", script.sha, 0, args[0]])
            self._heads[head_key] = head
        return head + _pack_args(args, 1)

    def start(self, script: Script, args: list[object]) -> asyncio.Future[Any]:
        """Run ``script`` with ``args`` as :meth:`run` does, started now: the step runs
        to its end whatever becomes of its caller, and the future gets its answer (or
        :class:`RedisUnavailable`).

        On an open connection that knows the script, the call is queued for this pass's
        write at once, with no task (one task per commit cost a save ~10 µs of client
        CPU, a sixth of what the ledger adds to it); else a task connects or loads the
        script first."""
        loop = asyncio.get_running_loop()
        wire = self._wires.get(loop)
        if (
            self._quiet_until
            or wire is None
            or wire.lost is not None
            or script.sha not in wire.scripts
        ):
            return asyncio.ensure_future(self.run(script, args))
        try:
            sent = wire.send(self._evalsha(script, args))
        except RedisUnavailable:
            return asyncio.ensure_future(self.run(script, args))  # (connects again)
        answer: asyncio.Future[Any] = loop.create_future()
        sent.add_done_callback(functools.partial(self._answered, answer, wire, script, args))
        return answer

    def _answered(
        self,
        answer: asyncio.Future[Any],
        wire: _Wire,
        script: Script,
        args: list[object],
        sent: asyncio.Future[Any],
    ) -> None:
        if sent.cancelled():
            if not answer.done():
                answer.cancel()
            return
        exc = sent.exception()  # (retrieved: not logged as lost)
        if answer.done():  # given up on by its caller
            return
        if exc is None:
            answer.set_result(sent.result())
        elif isinstance(exc, _ReplyError) and str(exc).startswith("NOSCRIPT"):
            # Redis lost the script since (SCRIPT FLUSH): it ran nowhere, sent whole now
            retry = asyncio.ensure_future(self._send_whole(wire, script, args))
            retry.add_done_callback(functools.partial(_copy_to, answer))
        else:
            if isinstance(exc, _ReplyError):
                exc = RedisUnavailable(str(exc).split(" ", 1)[0])
            elif isinstance(exc, RedisUnavailable):
                self._timed_out(exc)
            answer.set_exception(exc)

    async def run(self, script: Script, args: list[object]) -> Any:
        """Run ``script`` with ``args`` (``EVALSHA``; first ``SCRIPT LOAD`` on a connection)."""
        if self._quiet_until:
            self._check_quiet()
        try:
            loop = asyncio.get_running_loop()
            wire = self._wires.get(loop)
            if wire is None or wire.lost is not None:
                wire = await self._wire()
            try:
                if script.sha in wire.scripts:
                    return await wire.send(self._evalsha(script, args))
                return await _load_and_run(wire, script, self._evalsha(script, args))
            except _ReplyError as exc:
                # NOSCRIPT: Redis lost the script since (SCRIPT FLUSH), EVAL caches it again
                if not str(exc).startswith("NOSCRIPT"):
                    raise RedisUnavailable(str(exc).split(" ", 1)[0]) from exc
            return await self._send_whole(wire, script, args)
        except RedisUnavailable as exc:
            self._timed_out(exc)
            raise

    async def _send_whole(self, wire: _Wire, script: Script, args: list[object]) -> Any:
        """``EVAL`` with the script's text: it ran nowhere (``NOSCRIPT``), and is cached again."""
        try:
            return await wire.send(pack(["EVAL", script.text, 0, *args]))
        except _ReplyError as exc:
            raise RedisUnavailable(str(exc).split(" ", 1)[0]) from exc

    async def aclose(self) -> None:
        with contextlib.suppress(RuntimeError):
            with self._wires_lock:
                wire = self._wires.pop(asyncio.get_running_loop(), None)
            if wire is not None:
                wire.close()
        with self._wires_lock:
            self._wires.clear()  # other loops' connections: dropped, as their loops end
