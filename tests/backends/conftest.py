"""Fixtures and helpers of the backend tests that more than one module uses."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import S3StorageBackend, StorageBackend
from tests.s3util import MakeBackend, s3_backends

MiB = 1 << 20
# the smallest multipart setup S3 allows: 5 MiB parts (AWS multipart limits)
SMALL: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunk_size": 5 * MiB}


@pytest.fixture
async def make_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[MakeBackend]:
    """Build backends on the test bucket with extra settings; all are closed afterwards."""
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make


async def client_of(backend: StorageBackend) -> Any:
    """The backend's aiobotocore client, to register event hooks that observe requests."""
    assert isinstance(backend, S3StorageBackend)
    return await backend._client()


@pytest.fixture(
    params=[
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("azure", marks=pytest.mark.azure),
    ]
)
def cloud(request: pytest.FixtureRequest) -> StorageBackend:
    """Each backend built on obstore (ObstoreBackend): GCS, then Azure."""
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


@pytest.fixture(params=["fifo", "socket", "device"])
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Plants what another process may leave at a key: a FIFO, a socket, a device node."""
    sockets: list[socket.socket] = []

    def plant(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if request.param == "fifo":
            os.mkfifo(path)
        elif request.param == "socket":
            sock = socket.socket(socket.AF_UNIX)
            sockets.append(sock)
            # bound through its folder's descriptor: a socket's path has a limit of about
            # 100 bytes (sun_path), which a deep temp folder can pass
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                sock.bind(f"/proc/self/fd/{folder}/{path.name}")
            finally:
                os.close(folder)
        else:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # as /dev/null

    if request.param == "device":
        try:
            plant(tmp_path / "probe")
        except PermissionError:
            pytest.skip("making a device node needs CAP_MKNOD")
    yield plant
    for sock in sockets:
        sock.close()
