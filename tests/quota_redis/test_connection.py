"""How the Redis ledger is reached and scoped: TLS, namespaces, timed re-listing."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageQuotaExceededError
from tests.quota_redis.server import REDIS_SERVER, RedisServer


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the certificate is its own CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server that speaks TLS only, with a password (``rediss://:secret@...``)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it: apt redis-server)")
    workdir = tmp_path / "redis-tls"
    workdir.mkdir()
    server = RedisServer(workdir, password="s3cret-pw", tls=self_signed(workdir))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_rediss_url_keeps_the_ledger_over_tls(
    tmp_path: Path, tls_redis: RedisServer, namespace: str
) -> None:
    options = {"quota_redis_url": tls_redis.url, "quota_redis_namespace": namespace}
    a = LocalStorageBackend(tmp_path / "store", max_size_bytes=100, **options)  # type: ignore[arg-type]
    b = LocalStorageBackend(tmp_path / "store", max_size_bytes=100, **options)  # type: ignore[arg-type]
    async with a, b:
        await a.save("x", b"x" * 60)
        with pytest.raises(StorageQuotaExceededError):
            await b.save("y", b"y" * 60)
        assert (await b.get_usage()).used == 60


async def test_two_stores_on_one_redis_keep_ledgers_of_their_own_by_default(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # no namespace set: each is derived from the store's root, so two apps sharing a
    # Redis never count each other's bytes, and two processes of one app share one
    options = {"quota_redis_url": redis_server.url, "max_size_bytes": 100}
    app1 = LocalStorageBackend(tmp_path / "app1", **options)  # type: ignore[arg-type]
    app1_again = LocalStorageBackend(tmp_path / "app1", **options)  # type: ignore[arg-type]
    app2 = LocalStorageBackend(tmp_path / "app2", **options)  # type: ignore[arg-type]
    async with app1, app1_again, app2:
        await app1.save("x", b"x" * 60)
        await app2.save("x", b"x" * 60)  # its own 100 bytes
        assert (await app2.get_usage()).used == 60
        assert (await app1_again.get_usage()).used == 60
        with pytest.raises(StorageQuotaExceededError):
            await app1_again.save("y", b"y" * 60)  # app1's ledger, shared


async def test_the_refresh_interval_lists_bytes_written_behind_the_ledger(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # STORAGE_QUOTA_REFRESH_SECONDS: a write after the interval lists the quota again
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    fresh = LocalStorageBackend(
        tmp_path,
        max_size_bytes=1000,
        quota_refresh_seconds=0.0,
        **options,  # type: ignore[arg-type]
    )
    async with fresh:
        await fresh.save("a", b"x" * 100)
        (tmp_path / "foreign").write_bytes(b"y" * 300)  # stored behind the ledger
        await fresh.save("b", b"x" * 100)
        assert (await fresh.get_usage()).used == 500
        with pytest.raises(StorageQuotaExceededError):
            await fresh.save("c", b"x" * 600)


async def test_the_ledger_leaves_no_error_in_redis_stats(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    # operators alert on Redis's error stats: connecting, writing, overwriting, deleting
    # and listing usage answer no call with an error (a Redis before 7.2 refused the
    # client library's CLIENT SETINFO on every connection; a script called by its SHA
    # before Redis had its text was refused with NOSCRIPT)
    async with LocalStorageBackend(
        tmp_path / "store", max_size_bytes=1000, quota_redis_url=own_redis.url
    ) as storage:
        await storage.save("k", b"x" * 10)
        await storage.save("k", b"y" * 10)
        await storage.delete("k")
        assert (await storage.get_usage()).used == 0
    stats = own_redis.info("errorstats")
    assert "errorstat_" not in stats, stats


async def test_stores_sharing_a_fresh_redis_leave_no_error_in_its_stats(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    # each connection loads a script before its first call of it (again when Redis has
    # it from the other: harmless), with many calls of both stores in flight at once
    options = {"max_size_bytes": 10_000, "quota_redis_url": own_redis.url}
    a = LocalStorageBackend(tmp_path / "store", **options)  # type: ignore[arg-type]
    b = LocalStorageBackend(tmp_path / "store", **options)  # type: ignore[arg-type]
    async with a, b:
        await asyncio.gather(*(s.save(f"k{i}", b"x" * 10) for i in range(4) for s in (a, b)))
        await asyncio.gather(a.save("k0", b"y" * 20), b.delete("k1"), a.copy("k2", "c"))
        assert (await b.get_usage()).used == (await a.get_usage()).used == 50
    stats = own_redis.info("errorstats")
    assert "errorstat_" not in stats, stats
    calls = own_redis.info("commandstats")
    assert "cmdstat_evalsha:" in calls, calls
    assert "cmdstat_eval:" not in calls, calls  # no script was sent whole


@pytest.mark.parametrize("how", ["run", "start"])
async def test_scripts_flushed_mid_connection_are_sent_whole_once(
    own_redis: RedisServer, how: str
) -> None:
    # SCRIPT FLUSH (or a failover to a replica without them) empties Redis's script cache
    # under an open connection: the call refused with NOSCRIPT is sent again as EVAL,
    # which caches the script again; the calls after it find it (run awaits the step,
    # start sends it at once, the way a commit does)
    from pydantic import SecretStr

    from file_storage._quota.redis.wire import Client, Script

    client = Client(SecretStr(own_redis.url), timeout=5.0)
    script = Script("return ARGV[1] .. ARGV[2]")
    call = client.run if how == "run" else client.start
    try:
        assert await call(script, ["ns", "a"]) == "nsa"
        assert await client.call("SCRIPT", "FLUSH") == "OK"
        assert await call(script, ["ns", "b"]) == "nsb"
        assert await call(script, ["ns", "c"]) == "nsc"
    finally:
        await client.aclose()
    stats = own_redis.info("errorstats")
    assert "errorstat_NOSCRIPT:count=1\r\n" in stats, stats
    assert stats.count("errorstat_") == 1, stats


async def test_a_started_step_runs_and_answers_whatever_becomes_of_its_caller(
    own_redis: RedisServer,
) -> None:
    # a commit's step is started, not awaited in a task: a caller cancelled at once does
    # not stop it, its answer still comes, and an error reply is RedisUnavailable
    from pydantic import SecretStr

    from file_storage._quota.redis.wire import Client, RedisUnavailable, Script

    client = Client(SecretStr(own_redis.url), timeout=5.0)
    store = Script("redis.call('INCRBY', ARGV[1] .. ':n', ARGV[2]) return 'ok'")
    fail = Script("return redis.error_reply('BUSYKEY not now')")
    try:
        assert await client.run(store, ["ns", "1"]) == "ok"  # connected, script loaded
        started = []

        async def caller() -> None:
            started.append(client.start(store, ["ns", "10"]))
            await asyncio.shield(started[0])

        task = asyncio.ensure_future(caller())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await started[0] == "ok"
        assert await client.call("GET", "ns:n") == "11"
        with pytest.raises(RedisUnavailable, match="BUSYKEY"):
            await client.start(fail, ["ns"])  # (not loaded yet: through run)
        with pytest.raises(RedisUnavailable, match="BUSYKEY"):
            await client.start(fail, ["ns"])  # loaded: sent at once
    finally:
        await client.aclose()


@pytest.mark.parametrize("password", ["", "secret"], ids=["call", "connect"])
async def test_a_redis_that_never_answers_times_out_then_fails_at_once(password: str) -> None:
    # Redis accepts and never answers (a partition, a stalled server): the call, or the
    # connection's AUTH, times out, told apart from other outages by its type; the calls
    # within a timeout after fail the same way at once instead of waiting one more
    import socket

    from pydantic import SecretStr

    from file_storage._quota.redis.wire import Client, RedisTimeout, Script

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        auth = f":{password}@" if password else ""
        url = f"redis://{auth}127.0.0.1:{silent.getsockname()[1]}/0"
        client = Client(SecretStr(url), timeout=0.2)
        try:
            with pytest.raises(RedisTimeout):
                await client.run(Script("return 1"), ["ns"])
            with pytest.raises(RedisTimeout, match="just now"):
                await client.call("PING")
        finally:
            await client.aclose()


REDIS_PASSWORD = "rEdIs-pAsSwOrD-never-printed"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{REDIS_PASSWORD}@127.0.0.1:abc/0",  # a port that is no number
        f"redis://:{REDIS_PASSWORD}@127.0.0.1:99999/0",  # out of range
        f"redis://:{REDIS_PASSWORD}@[::1/0",  # an unclosed IPv6 address
        f"rediss://:{REDIS_PASSWORD}@127.0.0.1:6379/notadb",  # silently database 0 before
        f"redis://127.0.0.1:6379/0?password={REDIS_PASSWORD}&socket_timeout=soon",
        f"unix://:{REDIS_PASSWORD}@",  # no socket path
        f"redis://:{REDIS_PASSWORD}@127.0.0.1\n:6379/0",  # a pasting accident
    ],
    ids=["port", "port-range", "ipv6", "db", "query", "unix-path", "newline"],
)
def test_a_malformed_redis_url_fails_when_the_backend_is_built(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # not at the first write, as a ValueError from the Redis client (or not at all)
    import traceback

    from file_storage import StorageConfigError, StorageSettings, create_storage_backend

    monkeypatch.setenv("STORAGE_TYPE", "MEMORY")
    monkeypatch.setenv("STORAGE_QUOTA_REDIS_URL", url)
    with pytest.raises(StorageConfigError, match="STORAGE_QUOTA_REDIS_URL") as info:
        create_storage_backend(StorageSettings())
    assert REDIS_PASSWORD not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:6379/",
        "redis://user:pw@[::1]:6379/15",
        "rediss://:pw@redis.example:6380/0?ssl_cert_reqs=none",
        "redis://127.0.0.1/?db=3",
        "unix:///run/redis/redis.sock?db=2",
        "unix://:pw@/run/redis/redis.sock",
    ],
)
def test_well_formed_redis_urls_are_accepted(url: str) -> None:
    from file_storage import MemoryStorageBackend

    MemoryStorageBackend(quota_redis_url=url)  # builds, connects nowhere yet


async def test_a_loop_held_before_a_call_was_written_is_no_redis_timeout(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the app held the event loop (a blocking call: an SDK client built in it, a long GC
    # pause) past the ledger's timeout after a call was made and before it was written:
    # Redis answers as soon as it gets it, and was never silent
    import time

    from file_storage._quota.redis import wire

    held = 0.0
    monkeypatch.setattr(
        wire, "time", type("Clock", (), {"monotonic": lambda: time.monotonic() + held})
    )
    flush = wire._Wire._flush
    stalls = [True]

    def flush_after_a_stall(self: wire._Wire) -> None:
        nonlocal held
        if not stalls:
            flush(self)
            return
        stalls.clear()
        held += 6.0  # the loop was held for longer than the timeout (5 s)...
        flush(self)
        self._check_timeout()  # ...so its timer, due, runs in the same pass as the write

    async with LocalStorageBackend(
        tmp_path, quota_redis_url=redis_server.url, quota_redis_namespace=namespace
    ) as backend:
        backend.set_quota("", 100)
        await backend.save("warm", b"w")
        monkeypatch.setattr(wire._Wire, "_flush", flush_after_a_stall)
        await backend.save("a", b"x" * 10)
        assert not stalls
        assert (await backend.get_usage()).used == 11 == await backend.get_total_size()
