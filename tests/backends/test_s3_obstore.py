"""What only the obstore transport of the S3 backend has (``STORAGE_S3_CLIENT=obstore``).

The conformance suite runs on it as ``s3_obstore``, and the multipart tests both transports
share (tests/backends/test_s3_multipart.py) run on it too; here: that it really is obstore
doing the requests, its errors, and what still goes through aiobotocore.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from file_storage import (
    ObjectNotFoundError,
    S3StorageBackend,
    StorageConfigError,
    StorageError,
    StorageUnavailableError,
    create_storage_backend,
)
from file_storage.settings import StorageSettings
from tests.backends.conftest import SMALL, MiB
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.s3util import MakeBackend, closed_port, s3_backends

pytestmark = pytest.mark.s3


@pytest.fixture
async def make_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[MakeBackend]:
    """Build obstore-transport backends on the test bucket; all are closed afterwards."""
    async with s3_backends(moto_endpoint, s3_bucket, client="obstore") as make:
        yield make


def test_everyday_operations_never_load_aiobotocore(moto_endpoint: str, s3_bucket: str) -> None:
    script = f"""
import asyncio, sys, tempfile, pathlib
from file_storage import S3StorageBackend

async def main():
    backend = S3StorageBackend(
        {s3_bucket!r}, endpoint_url={moto_endpoint!r}, access_key_id={FAKE_KEY_ID!r},
        secret_access_key={FAKE_SECRET!r}, client="obstore",
        multipart_threshold=5 * 2**20, multipart_chunk_size=5 * 2**20,
    )
    async with backend:
        await backend.save("a/b.txt", b"hello", metadata={{"who": "Zoë"}})
        big = b"x" * (11 * 2**20)
        await backend.save("a/big.bin", big)
        assert await backend.load("a/big.bin") == big
        assert b"".join([c async for c in backend.stream("a/b.txt", start=1)]) == b"ello"
        assert (await backend.stat("a/b.txt")).metadata == {{"who": "Zoë"}}
        assert await backend.exists("a/b.txt") and not await backend.exists("nope")
        await backend.copy("a/b.txt", "c/d.txt")
        assert await backend.list_files() == ["a/b.txt", "a/big.bin", "c/d.txt"]
        assert await backend.list_dirs() == ["a", "c"]
        folder = pathlib.Path(tempfile.mkdtemp())
        await backend.download_file("a/big.bin", folder / "big.bin")
        await backend.upload_file(folder / "big.bin", "e/big.bin")
        # (a presigned GET signs the response's headers, which obstore cannot: aiobotocore)
        await backend.get_presigned_url("a/b.txt", method="PUT")
        await backend.delete_many(["a/b.txt", "e/big.bin"])
        await backend.delete_prefix("a")
    print(*sys.modules)

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout.split()
    assert "obstore" in out
    assert not {"aiobotocore", "botocore", "aiohttp"} & set(out)


async def test_unicode_metadata_travels_rfc_2047_encoded(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend()
    await backend.save("a.txt", b"x", metadata={"title": "Crème brûlée"})
    stored = raw.head_object(Bucket=s3_bucket, Key="storage/a.txt")["Metadata"]["title"]
    assert stored.startswith("=?UTF-8?B?")
    assert (await backend.stat("a.txt")).metadata == {"title": "Crème brûlée"}


async def test_objects_written_by_one_transport_read_the_same_on_the_other(
    make_backend: MakeBackend,
) -> None:
    obstore, boto = make_backend(), make_backend(client="aioboto3")
    await obstore.save("a.txt", b"x", content_type="text/x-a", metadata={"n": "ü"})
    await boto.save("b.txt", b"y", content_type="text/x-b", metadata={"n": "ö"})
    for key in ("a.txt", "b.txt"):
        one, two = await obstore.stat(key), await boto.stat(key)
        assert (one.size, one.etag, one.content_type, one.metadata) == (
            two.size,
            two.etag,
            two.content_type,
            two.metadata,
        )


async def test_missing_object_is_chained_from_obstores_error(make_backend: MakeBackend) -> None:
    backend = make_backend()
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.load("missing.txt")
    assert (info.value.operation, info.value.key) == ("load", "missing.txt")
    assert type(info.value.__cause__).__module__.startswith(("builtins", "obstore"))


async def test_missing_bucket_raises_config_error(make_backend: MakeBackend) -> None:
    backend = make_backend(bucket="no-such-bucket-here")
    with pytest.raises(StorageConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        await backend.iter_files().__anext__()


async def test_unreachable_server_raises_unavailable_without_its_address(
    make_backend: MakeBackend,
) -> None:
    port = closed_port()
    backend = make_backend(
        endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1, connect_timeout=1, read_timeout=1
    )
    started = time.perf_counter()
    with pytest.raises(StorageUnavailableError) as info:
        await backend.save("a.txt", b"x")
    assert time.perf_counter() - started < 5
    assert (info.value.operation, info.value.key) == ("save", "a.txt")
    assert str(port) not in str(info.value)
    assert info.value.__cause__ is not None


async def test_secret_never_appears_in_errors(make_backend: MakeBackend) -> None:
    backend = make_backend(endpoint_url=f"http://127.0.0.1:{closed_port()}", max_attempts=1)
    with pytest.raises(StorageError) as info:
        await backend.save("a.txt", b"x")
    assert FAKE_SECRET not in f"{info.value} {info.value!r}"


async def test_copy_above_the_copyobject_limit_goes_through_aiobotocore(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(**SMALL)
    backend._copy_threshold = 5 * MiB  # UploadPartCopy: an operation obstore does not have
    data = os.urandom(6 * MiB)
    await backend.save("src.bin", data, metadata={"k": "v"})
    await backend.copy("src.bin", "dst.bin")
    assert await backend.load("dst.bin") == data
    assert (await backend.stat("dst.bin")).metadata == {"k": "v"}


def test_settings_select_the_obstore_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "S3")
    monkeypatch.setenv("STORAGE_S3_BUCKET", "media")
    monkeypatch.setenv("STORAGE_S3_CLIENT", "obstore")
    settings = StorageSettings()
    assert settings.s3.client == "obstore"
    backend = create_storage_backend(settings)
    assert isinstance(backend, S3StorageBackend)
    assert backend._options.client == "obstore"


def test_unknown_client_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_S3_CLIENT", "boto2")
    with pytest.raises(StorageConfigError, match="STORAGE_S3_CLIENT") as info:
        StorageSettings()
    assert "boto2" not in str(info.value)


def test_constructor_rejects_an_unknown_client() -> None:
    with pytest.raises(StorageConfigError, match="client"):
        S3StorageBackend("bucket", client="boto2")  # type: ignore[arg-type]
