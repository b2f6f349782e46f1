"""create_storage_backend, and the process-wide get_/close_storage_backend singleton."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

import file_storage.backends.local as local_module
import file_storage.backends.memory as memory_module
import file_storage.backends.s3 as s3_module
import file_storage.factory as factory
from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    S3StorageBackend,
    StorageBackend,
    StorageConfigError,
    StorageSettings,
    close_storage_backend,
    create_storage_backend,
    get_storage_backend,
)
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET

SECRET = "fake-secret-key-that-must-never-be-printed"
SIGNING_KEY = "signing-key-" + "x" * 32


class CountingMemoryBackend(MemoryStorageBackend):
    """Counts constructions and closes, for the singleton tests."""

    built: ClassVar[list[CountingMemoryBackend]] = []

    def __init__(self, **kwargs: Any) -> None:
        # widen the race window: a check-and-create without a lock would build twice
        for _ in range(20_000):
            pass
        super().__init__(**kwargs)
        self.closed = 0
        CountingMemoryBackend.built.append(self)

    async def _aclose(self) -> None:
        self.closed += 1


@pytest.fixture(autouse=True)
def _no_singleton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without a process-wide backend; the previous one is restored after."""
    monkeypatch.setattr(factory, "_backend", None)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> list[CountingMemoryBackend]:
    """STORAGE_TYPE=MEMORY, building CountingMemoryBackend; returns the list of those built."""
    monkeypatch.setenv("STORAGE_TYPE", "memory")
    monkeypatch.setattr(memory_module, "MemoryStorageBackend", CountingMemoryBackend)
    monkeypatch.setattr(CountingMemoryBackend, "built", [])
    return CountingMemoryBackend.built


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    """Switch threads as often as possible so that races show up, not hide."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


# ------------------------------------------------------------------ create_storage_backend


def test_create_memory_backend() -> None:
    backend = create_storage_backend(StorageSettings(type="memory"))
    assert type(backend) is MemoryStorageBackend
    assert backend.max_size_bytes is None


def test_create_local_backend(tmp_path: Path) -> None:
    settings = StorageSettings(type="local", local={"path": tmp_path / "files", "max_size_gb": 0.5})
    backend = create_storage_backend(settings)
    assert isinstance(backend, LocalStorageBackend)
    assert backend.root == tmp_path / "files"
    assert backend.max_size_bytes == 500_000_000


def test_create_local_backend_by_default(tmp_path: Path) -> None:
    backend = create_storage_backend()
    assert isinstance(backend, LocalStorageBackend)
    assert backend.root == tmp_path / "storage"


def test_create_s3_backend() -> None:
    settings = StorageSettings(
        type="s3",
        s3={
            "bucket": "media",
            "prefix": "app",
            "endpoint_url": "http://127.0.0.1:9",
            "access_key_id": "AKIAFAKEFAKEFAKEFAKE",
            "secret_access_key": SECRET,
            "max_size_gb": 2,
        },
    )
    backend = create_storage_backend(settings)
    assert isinstance(backend, S3StorageBackend)
    assert backend.max_size_bytes == 2_000_000_000
    assert "media" in repr(backend)
    assert SECRET not in repr(backend)


def test_create_reads_the_environment_when_given_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "Memory")
    assert type(create_storage_backend()) is MemoryStorageBackend


def test_create_reads_dotenv_when_given_nothing(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STORAGE_TYPE=memory\n")
    assert type(create_storage_backend()) is MemoryStorageBackend


def test_create_builds_a_new_backend_each_time() -> None:
    settings = StorageSettings(type="memory")
    assert create_storage_backend(settings) is not create_storage_backend(settings)


def test_building_does_no_io(tmp_path: Path) -> None:
    create_storage_backend(StorageSettings(type="local", local={"path": tmp_path / "lazy"}))
    create_storage_backend(
        StorageSettings(type="s3", s3={"bucket": "media", "endpoint_url": "http://127.0.0.1:9"})
    )
    assert not (tmp_path / "lazy").exists()


def test_s3_without_bucket_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "S3")
    with pytest.raises(StorageConfigError, match="STORAGE_S3_BUCKET"):
        create_storage_backend()


def test_s3_without_bucket_names_the_variable_even_unvalidated() -> None:
    settings = StorageSettings.model_construct(type="S3")
    with pytest.raises(StorageConfigError, match="STORAGE_S3_BUCKET"):
        create_storage_backend(settings)


def test_local_settings_reach_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(root: object, **kwargs: object) -> StorageBackend:
        seen.update(kwargs, root=root)
        return MemoryStorageBackend()

    monkeypatch.setattr(local_module, "LocalStorageBackend", fake)
    for name, value in {
        "STORAGE_LOCAL_PATH": "/srv/files",
        "STORAGE_LOCAL_MAX_SIZE_GB": "2.01",
        "STORAGE_LOCAL_BASE_URL": "https://app.example.com/files/",
        "STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY,
        "STORAGE_QUOTA_REFRESH_SECONDS": "30",
        "STORAGE_LOCAL_TEMP_MAX_AGE_SECONDS": "600",
        "STORAGE_QUOTA_REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
        "STORAGE_QUOTA_REDIS_NAMESPACE": "app",
        "STORAGE_QUOTA_LEASE_SECONDS": "20",
        "STORAGE_QUOTA_FAIL_OPEN": "true",
        "STORAGE_EXPIRE_INTERVAL_SECONDS": "900",
        "STORAGE_LOCAL_PUBLIC_BASE_URL": "https://cdn.example.com/media/",
    }.items():
        monkeypatch.setenv(name, value)
    create_storage_backend()
    redis_url = seen.pop("quota_redis_url")
    assert isinstance(redis_url, SecretStr)
    assert redis_url.get_secret_value() == "redis://:pw@127.0.0.1:6379/0"
    signing_key = seen.pop("signing_key")
    assert isinstance(signing_key, SecretStr)
    assert signing_key.get_secret_value() == SIGNING_KEY
    assert seen == {
        "root": Path("/srv/files"),
        "max_size_bytes": 2_010_000_000,
        "quota_refresh_seconds": 30.0,
        "base_url": "https://app.example.com/files",
        "temp_max_age_seconds": 600.0,
        "quota_redis_namespace": "app",
        "quota_lease_seconds": 20.0,
        "quota_fail_open": True,
        "expire_interval_seconds": 900.0,
        "public_base_url": "https://cdn.example.com/media",
    }


def test_s3_settings_reach_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake(bucket: str, **kwargs: object) -> StorageBackend:
        seen.update(kwargs, bucket=bucket)
        return MemoryStorageBackend()

    monkeypatch.setattr(s3_module, "S3StorageBackend", fake)
    for name, value in {
        "STORAGE_TYPE": "s3",
        "STORAGE_S3_BUCKET": "media",
        "STORAGE_S3_PREFIX": "app/prod",
        "STORAGE_S3_REGION": "eu-west-3",
        "STORAGE_S3_ACCESS_KEY_ID": "AKIAFAKE",
        "STORAGE_S3_SECRET_ACCESS_KEY": SECRET,
        "STORAGE_S3_SESSION_TOKEN": "token",
        "STORAGE_S3_ENDPOINT_URL": "http://minio:9000",
        "STORAGE_S3_PUBLIC_ENDPOINT_URL": "https://files.example.com",
        "STORAGE_S3_ADDRESSING_STYLE": "path",
        "STORAGE_S3_MAX_SIZE_GB": "0.5",
        "STORAGE_S3_MULTIPART_THRESHOLD_MB": "64",
        "STORAGE_S3_MULTIPART_CHUNK_MB": "10",
        "STORAGE_S3_MAX_CONCURRENCY": "4",
        "STORAGE_S3_SSE": "aws:kms",
        "STORAGE_S3_SSE_KMS_KEY_ID": "alias/media",
        "STORAGE_S3_CHECKSUM": "md5",
        "STORAGE_S3_MAX_ATTEMPTS": "3",
        "STORAGE_S3_RETRY_MODE": "adaptive",
        "STORAGE_S3_CONNECT_TIMEOUT": "2.5",
        "STORAGE_S3_READ_TIMEOUT": "30",
        "STORAGE_S3_MAX_POOL_CONNECTIONS": "20",
        "STORAGE_S3_FALLBACK_PATH": "/var/spool/storage",
        "STORAGE_S3_FLUSH_INTERVAL_SECONDS": "60",
        "STORAGE_S3_CLIENT": "obstore",
        "STORAGE_S3_PUBLIC_BASE_URL": "https://cdn.example.com",
        "STORAGE_QUOTA_REFRESH_SECONDS": "15",
    }.items():
        monkeypatch.setenv(name, value)
    create_storage_backend()
    secret = seen.pop("secret_access_key")
    token = seen.pop("session_token")
    assert isinstance(secret, SecretStr)
    assert isinstance(token, SecretStr)
    assert secret.get_secret_value() == SECRET
    assert token.get_secret_value() == "token"
    assert seen == {
        "bucket": "media",
        "prefix": "app/prod",
        "region": "eu-west-3",
        "access_key_id": "AKIAFAKE",
        "endpoint_url": "http://minio:9000",
        "public_endpoint_url": "https://files.example.com",
        "addressing_style": "path",
        "max_size_bytes": 500_000_000,
        "quota_refresh_seconds": 15.0,
        "multipart_threshold": 64 * 2**20,
        "multipart_chunk_size": 10 * 2**20,
        "max_concurrency": 4,
        "sse": "aws:kms",
        "sse_kms_key_id": "alias/media",
        "checksum": "md5",
        "max_attempts": 3,
        "retry_mode": "adaptive",
        "connect_timeout": 2.5,
        "read_timeout": 30.0,
        "max_pool_connections": 20,
        "fallback_path": Path("/var/spool/storage"),
        "flush_interval_seconds": 60.0,
        "client": "obstore",
        "quota_redis_url": None,
        "quota_redis_namespace": None,
        "quota_lease_seconds": 60.0,
        "quota_fail_open": False,
        "public_base_url": "https://cdn.example.com",
    }


def test_building_an_s3_backend_does_not_load_the_sdk(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from file_storage import StorageSettings, create_storage_backend\n"
        "create_storage_backend(StorageSettings(type='s3', s3={'bucket': 'media'}))\n"
        "print(*sys.modules)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.split()
    assert not {"aioboto3", "aiobotocore", "botocore", "boto3"} & set(loaded)


# ------------------------------------------------------------------ the singleton


def test_get_returns_the_same_backend(counting: list[CountingMemoryBackend]) -> None:
    first = get_storage_backend()
    assert get_storage_backend() is first
    assert counting == [first]


def test_get_is_not_a_backend_from_create(counting: list[CountingMemoryBackend]) -> None:
    assert create_storage_backend() is not get_storage_backend()


async def test_concurrent_first_calls_build_exactly_one_backend(
    counting: list[CountingMemoryBackend], fast_thread_switches: None
) -> None:
    threads_count = 32
    barrier = threading.Barrier(threads_count + 1)  # the threads and this event loop
    from_threads: list[StorageBackend] = []

    def ask() -> None:
        barrier.wait()
        from_threads.append(get_storage_backend())

    async def ask_async() -> StorageBackend:
        return get_storage_backend()

    threads = [threading.Thread(target=ask) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    barrier.wait()  # every thread is released at once, while the coroutines run
    from_coroutines = await asyncio.gather(*(ask_async() for _ in range(100)))
    for thread in threads:
        thread.join()

    assert len(counting) == 1
    everyone = [*from_threads, *from_coroutines]
    assert len(everyone) == threads_count + 100
    assert all(backend is counting[0] for backend in everyone)


async def test_concurrent_first_calls_from_threads_of_the_loop(
    counting: list[CountingMemoryBackend], fast_thread_switches: None
) -> None:
    results = await asyncio.gather(*(asyncio.to_thread(get_storage_backend) for _ in range(100)))
    assert len(counting) == 1
    assert all(backend is counting[0] for backend in results)


async def test_close_closes_and_forgets_the_backend(
    counting: list[CountingMemoryBackend],
) -> None:
    first = get_storage_backend()
    await close_storage_backend()
    assert counting[0].closed == 1
    second = get_storage_backend()
    assert second is not first
    assert len(counting) == 2
    assert get_storage_backend() is second


async def test_close_without_a_backend_does_nothing(
    counting: list[CountingMemoryBackend],
) -> None:
    await close_storage_backend()
    await close_storage_backend()
    assert counting == []


async def test_close_twice_closes_once(counting: list[CountingMemoryBackend]) -> None:
    get_storage_backend()
    await asyncio.gather(close_storage_backend(), close_storage_backend())
    assert counting[0].closed == 1


def test_get_with_bad_settings_raises_and_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "s3")
    with pytest.raises(StorageConfigError, match="STORAGE_S3_BUCKET"):
        get_storage_backend()
    monkeypatch.setenv("STORAGE_TYPE", "memory")
    assert type(get_storage_backend()) is MemoryStorageBackend


@pytest.mark.s3
@pytest.mark.parametrize("value", ["", "/"])
async def test_an_empty_or_slash_s3_prefix_works_at_the_bucket_root(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, s3_bucket: str, raw: Any, value: str
) -> None:
    raw.put_object(Bucket=s3_bucket, Key="report.txt", Body=b"at the root")
    for name, setting in {
        "STORAGE_TYPE": "S3",
        "STORAGE_S3_BUCKET": s3_bucket,
        "STORAGE_S3_PREFIX": value,
        "STORAGE_S3_ENDPOINT_URL": moto_endpoint,
        "STORAGE_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
        "STORAGE_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
    }.items():
        monkeypatch.setenv(name, setting)
    async with create_storage_backend() as backend:
        assert await backend.list_files() == ["report.txt"]
        assert await backend.load("report.txt") == b"at the root"
        await backend.save("docs/new.txt", b"x")
    assert raw.get_object(Bucket=s3_bucket, Key="docs/new.txt")["Body"].read() == b"x"


async def test_memory_uses_the_local_url_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "memory")
    monkeypatch.setenv("STORAGE_LOCAL_BASE_URL", "/files")
    monkeypatch.setenv("STORAGE_LOCAL_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("STORAGE_LOCAL_PUBLIC_BASE_URL", "/public")
    backend = create_storage_backend()
    assert (await backend.get_presigned_url("a b.txt")).startswith("/files/a%20b.txt?expires=")
    assert backend.get_public_url("a b.txt") == "/public/a%20b.txt"


def test_a_child_forked_while_another_thread_builds_the_singleton_builds_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.forks import DEADLINE, forked, in_child

    monkeypatch.setenv("STORAGE_TYPE", "memory")
    building, built = threading.Event(), threading.Event()

    def build() -> None:  # another thread, caught building the singleton at the fork
        with factory._lock:
            building.set()
            built.wait(DEADLINE)

    thread = threading.Thread(target=build)
    thread.start()
    building.wait(DEADLINE)
    try:
        child = forked(in_child(lambda: type(get_storage_backend()).__name__))
        assert child() == "MemoryStorageBackend"
    finally:
        built.set()
        thread.join()
