"""Fault-test fixtures: a fault proxy in front of moto, backends through it, raw access.

Backends here make 3 attempts with 1 s timeouts, and botocore's backoff between attempts
is zero (its jitter would make the suite slow and its timing random): the retries
themselves are botocore's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import AzureStorageBackend, S3StorageBackend
from file_storage._spool import Spool
from file_storage.backends.azure import EMULATOR_ACCOUNT
from tests.azure_emulator import fresh_container_backend
from tests.faults.proxy import FaultProxy
from tests.forks import DEADLINE, forked, in_child
from tests.s3util import MakeBackend, s3_backends

MiB = 1 << 20
ATTEMPTS = 3
TIMEOUT = 1.0  # connect and read timeout, seconds
# the smallest multipart setup S3 allows: 5 MiB parts (AWS multipart limits)
SMALL: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunk_size": 5 * MiB}


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's moto server, for one test."""
    fault_proxy = FaultProxy(moto_endpoint)
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries at once instead of after 0..2^n s of jitter."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


@pytest.fixture
async def make_backend(
    proxy: FaultProxy, s3_bucket: str, no_backoff: None
) -> AsyncIterator[MakeBackend]:
    """Build backends that reach the test bucket through the proxy; all closed afterwards."""
    options = {"max_attempts": ATTEMPTS, "connect_timeout": TIMEOUT, "read_timeout": TIMEOUT}
    async with s3_backends(proxy.endpoint, s3_bucket, **options) as make:
        yield make


async def chunks(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    """``data`` as a stream that can be read only once, like an HTTP request body."""
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    """The S3 fallback spool's folder."""
    return tmp_path / "spool"


@pytest.fixture
def spooling(make_backend: MakeBackend, spool_path: Path) -> S3StorageBackend:
    """An S3 backend (through the fault proxy) spooling to ``spool_path`` when S3 fails."""
    return make_backend(fallback_path=spool_path)


async def appears(path: Path) -> bool:
    """Whether ``path`` exists, waiting for it a bounded time (made by a forked child)."""
    for _ in range(int(DEADLINE / 0.01)):  # a bound: the child makes it in far less
        if path.exists():
            return True
        await asyncio.sleep(0.01)
    return path.exists()


def hold_in_child(
    root: Path, key: str, holding: Path, go: Path, store: str = ""
) -> Callable[[], Any]:
    """Fork a child that holds ``key`` of the spool folder ``root`` (of the backend whose
    ``store`` it is, and makes ``holding``) until ``go`` exists; returns the call waiting
    for its end ("done")."""

    async def child() -> str:
        async with Spool(root, store).locked(key):
            holding.touch()
            await appears(go)  # the parent says go at once
        return "done"

    return forked(in_child(lambda: asyncio.run(child())))


@pytest.fixture
def azure_proxy(azurite: Any) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's Azurite, for one test."""
    proxy = FaultProxy(azurite.endpoint.rsplit("/", 1)[0])
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def azure_behind_proxy(
    azurite: Any, azure_proxy: FaultProxy
) -> AsyncIterator[AzureStorageBackend]:
    """An Azure backend on a fresh container, reached through ``azure_proxy``."""
    endpoint = f"{azure_proxy.endpoint}/{EMULATOR_ACCOUNT}"
    async with fresh_container_backend(azurite, endpoint, max_size_bytes=10**9) as backend:
        yield backend
