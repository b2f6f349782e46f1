"""The fixtures the conformance tests share, built on the ``backend`` fixture you define.

Exported with the tests by ``from file_storage.testing.suite import *``. Async fixtures are
``pytest_asyncio`` fixtures, so they run in pytest-asyncio's strict mode as well as in auto.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import pytest_asyncio

from file_storage import StorageBackend

__all__ = ["big_file", "filled", "source", "stored", "versioned"]

MiB = 1 << 20
#: the size of ``big_file``: large enough for multipart uploads on every cloud
BIG_FILE_SIZE = 64 * MiB

#: what ``filled`` stores: neighbours that a string prefix would confuse with a folder
LAYOUT = {
    "users/u1/a.txt": b"1",
    "users/u1/s1/step1/shot.png": b"22",
    "users/u1/s1/step2/log.txt": b"333",
    "users/u1/s2/video.mp4": b"4444",
    "users/u10/b.txt": b"55555",
    "users/u1-x/c.txt": b"666666",
    "users/u1.txt": b"7777777",
    "top.txt": b"88888888",
}

#: what ``stored`` stores at ``r/data.bin``: 10,240 bytes
DATA = bytes(range(256)) * 40


@pytest_asyncio.fixture
async def filled(backend: StorageBackend) -> StorageBackend:
    """The backend holding ``LAYOUT``."""
    for key, data in LAYOUT.items():
        await backend.save(key, data)
    return backend


@pytest_asyncio.fixture
async def source(backend: StorageBackend) -> StorageBackend:
    """The backend holding ``src/a.bin`` with a content type and metadata."""
    await backend.save("src/a.bin", b"payload", content_type="video/webm", metadata={"k": "v"})
    return backend


@pytest_asyncio.fixture
async def stored(backend: StorageBackend) -> StorageBackend:
    """The backend holding ``DATA`` at ``r/data.bin``."""
    await backend.save("r/data.bin", DATA)
    return backend


@pytest_asyncio.fixture
async def versioned(backend: StorageBackend) -> StorageBackend:
    """The backend with versioning on (a test using it needs the ``versions`` feature)."""
    await backend.set_versioning(True)
    return backend


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file of ``BIG_FILE_SIZE`` random bytes and its sha256, made once per test module."""
    path = tmp_path_factory.mktemp("large") / "big.webm"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(BIG_FILE_SIZE // (4 * MiB)):
            block = os.urandom(4 * MiB)
            digest.update(block)
            out.write(block)
    return path, digest.hexdigest()
