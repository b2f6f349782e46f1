"""One backend used from one event loop after another: asyncio.run per job, as task
workers and management commands do. Sync tests: each asyncio.run is a new loop, and
pytest's filterwarnings=error turns any unclosed session or transport into a failure."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import file_storage.factory as factory
from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    S3StorageBackend,
    StorageBackend,
    close_storage_backend,
    get_storage_backend,
)
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail on any ResourceWarning (an unclosed aiohttp session, connector or socket)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in seen] == []


async def job(backend: StorageBackend, run: int) -> None:
    # concurrent calls: the first ones race to open the client (the lock is contended)
    await asyncio.gather(*(backend.save(f"run{run}/k{i}.txt", b"%d" % i) for i in range(8)))
    loaded = await asyncio.gather(*(backend.load(f"run{run}/k{i}.txt") for i in range(8)))
    assert loaded == [b"%d" % i for i in range(8)]
    assert len(await backend.list_files()) == 8 * (run + 1)


def three_runs(backend: StorageBackend, close: Callable[[], Any] | None = None) -> None:
    for run in range(3):
        asyncio.run(job(backend, run))
    asyncio.run(backend.aclose() if close is None else close())


def s3(moto_endpoint: str, bucket: str, **extra: Any) -> S3StorageBackend:
    return S3StorageBackend(
        bucket,
        endpoint_url=moto_endpoint,
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        addressing_style="path",
        **extra,
    )


@pytest.mark.s3
def test_s3_backend_works_from_successive_event_loops(moto_endpoint: str, s3_bucket: str) -> None:
    three_runs(s3(moto_endpoint, s3_bucket))


@pytest.mark.s3
def test_s3_signing_client_works_from_successive_event_loops(
    moto_endpoint: str, s3_bucket: str
) -> None:
    backend = s3(moto_endpoint, s3_bucket, public_endpoint_url="http://127.0.0.1:9")
    for _ in range(3):
        url = asyncio.run(backend.get_presigned_url("a.txt"))
        assert url.startswith("http://127.0.0.1:9/")
    asyncio.run(backend.aclose())


@pytest.mark.s3
def test_s3_spool_flusher_follows_the_event_loop(
    moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    backend = s3(
        moto_endpoint, s3_bucket, fallback_path=tmp_path / "spool", flush_interval_seconds=3600
    )

    async def flush_job(run: int) -> None:
        await job(backend, run)
        assert await backend.flush_spool() == 0  # the flush lock of this loop

    for run in range(3):
        asyncio.run(flush_job(run))
    asyncio.run(backend.aclose())


@pytest.mark.s3
def test_s3_backend_closed_in_a_later_loop_than_it_opened(
    moto_endpoint: str, s3_bucket: str
) -> None:
    backend = s3(moto_endpoint, s3_bucket)
    asyncio.run(job(backend, 0))
    asyncio.run(backend.aclose())  # nothing of the first loop is left to close
    asyncio.run(job(backend, 1))
    asyncio.run(backend.aclose())


def test_local_backend_works_from_successive_event_loops(tmp_path: Path) -> None:
    three_runs(LocalStorageBackend(tmp_path / "storage", max_size_bytes=10**6))


def test_memory_backend_works_from_successive_event_loops() -> None:
    three_runs(MemoryStorageBackend(max_size_bytes=10**6))


@pytest.mark.parametrize("kind", ["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def test_the_process_wide_backend_works_from_successive_event_loops(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, kind: str
) -> None:
    monkeypatch.setattr(factory, "_backend", None)
    monkeypatch.setenv("STORAGE_TYPE", kind)
    if kind == "s3":
        monkeypatch.setenv("STORAGE_S3_BUCKET", request.getfixturevalue("s3_bucket"))
        monkeypatch.setenv("STORAGE_S3_ENDPOINT_URL", request.getfixturevalue("moto_endpoint"))
        monkeypatch.setenv("STORAGE_S3_ACCESS_KEY_ID", FAKE_KEY_ID)
        monkeypatch.setenv("STORAGE_S3_SECRET_ACCESS_KEY", FAKE_SECRET)

    async def run(n: int) -> None:
        await job(get_storage_backend(), n)

    asyncio.run(run(0))
    asyncio.run(run(1))
    asyncio.run(close_storage_backend())


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_quota_scans_contended_in_successive_event_loops(tmp_path: Path, kind: str) -> None:
    backend: StorageBackend = (
        MemoryStorageBackend(max_size_bytes=10**6)
        if kind == "memory"
        else LocalStorageBackend(tmp_path / "storage", max_size_bytes=10**6)
    )

    async def scans(run: int) -> None:
        await job(backend, run)
        # two scans at once: the second waits on the quota's lock
        await asyncio.gather(backend.refresh_usage(), backend.refresh_usage())
        assert (await backend.get_usage()).used == 8 * (run + 1)

    for run in range(3):
        asyncio.run(scans(run))


@pytest.mark.gcs
def test_gcs_backend_works_from_successive_event_loops(gcs_server: tuple[str, str]) -> None:
    from file_storage import GCSStorageBackend
    from tests.gcs_emulator import create_bucket

    endpoint, account = gcs_server
    create_bucket(endpoint, "event-loops")
    three_runs(GCSStorageBackend("event-loops", service_account=account, endpoint_url=endpoint))


@pytest.mark.azure
def test_azure_backend_works_from_successive_event_loops(azurite: Any) -> None:
    from file_storage import AzureStorageBackend
    from file_storage.backends.azure import EMULATOR_ACCOUNT, EMULATOR_KEY

    azurite.create_container("event-loops")
    backend = AzureStorageBackend(
        "event-loops",
        account=EMULATOR_ACCOUNT,
        access_key=EMULATOR_KEY,
        endpoint_url=azurite.endpoint,
        max_size_bytes=10**6,
    )
    three_runs(backend)
    azurite.delete_container("event-loops")


def test_expiry_rules_contended_in_successive_event_loops_free_each_loop(
    tmp_path: Path,
) -> None:
    import weakref

    backend = LocalStorageBackend(tmp_path)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def rules(run: int) -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        # concurrent: the rules' lock is contended (a lock that waited refers to its loop)
        await asyncio.gather(*(backend.set_expiration(f"r{run}-{i}/", i + 1) for i in range(3)))

    for run in range(3):
        asyncio.run(rules(run))
    gc.collect()
    assert [ref for ref in loops if ref() is not None] == []
    assert len(asyncio.run(backend.get_expiration())) == 9
