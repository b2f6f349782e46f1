"""The S3 contenders, each bound to one bucket, all storing key ``k`` at ``bench/k``.

* ``file_storage``: :class:`S3StorageBackend` with its defaults.
* ``file_storage (obstore)``: the same with ``client="obstore"`` (``STORAGE_S3_CLIENT``).
* ``aioboto3 (one client)``: what a competent user writes: one client kept open,
  ``put_object`` / ``get_object`` + ``await body.read()``; the floor the library adds to.
* ``aioboto3 (client per call)``: a new Session and client per call, the pattern the
  library replaces.
* ``s3fs`` and ``obstore``: peers, used through their documented async APIs.

Large transfers use the same part size (8 MiB) and parallelism (8) everywhere a
client lets us set them, so a ratio compares implementations, not settings.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Literal

from benchmarks._common import KEY_ID, MIB, REGION, SECRET

ROOT = "bench"
PART = 8 * MIB
THRESHOLD = 16 * MIB
PARALLEL = 8

LIBRARY = "file_storage"
LIBRARY_OBSTORE = "file_storage (obstore)"
RAW = "aioboto3 (one client)"
NAIVE = "aioboto3 (client per call)"
S3FS = "s3fs"
OBSTORE = "obstore"
CONTENDERS = (LIBRARY, LIBRARY_OBSTORE, RAW, NAIVE, S3FS, OBSTORE)


class Contender(abc.ABC):
    """One way of talking to S3; ``open`` before use, ``close`` after."""

    name: str

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    async def count(self, prefix: str) -> int:
        """List every key under the folder ``prefix``; return how many."""

    @abc.abstractmethod
    async def upload(self, path: Path, key: str) -> None: ...

    @abc.abstractmethod
    async def download(self, key: str, path: Path) -> None: ...


def botocore_config(**extra: Any) -> Any:
    from botocore.config import Config

    return Config(region_name=REGION, s3={"addressing_style": "path"}, **extra)


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=THRESHOLD, multipart_chunksize=PART, max_concurrency=PARALLEL
    )


class Library(Contender):
    name = LIBRARY
    client: Literal["aioboto3", "obstore"] = "aioboto3"

    async def open(self) -> None:
        from file_storage import S3StorageBackend

        self.backend = S3StorageBackend(
            self.bucket,
            prefix=ROOT,
            region=REGION,
            access_key_id=KEY_ID,
            secret_access_key=SECRET,
            endpoint_url=self.endpoint,
            addressing_style="path",
            multipart_threshold=THRESHOLD,
            multipart_chunk_size=PART,
            max_concurrency=PARALLEL,
            client=self.client,
        )

    async def close(self) -> None:
        await self.backend.aclose()

    async def put(self, key: str, data: bytes) -> None:
        await self.backend.save(key, data)

    async def get(self, key: str) -> bytes:
        return await self.backend.load(key)

    async def count(self, prefix: str) -> int:
        return len(await self.backend.list_files(prefix))

    async def upload(self, path: Path, key: str) -> None:
        await self.backend.upload_file(path, key)

    async def download(self, key: str, path: Path) -> None:
        await self.backend.download_file(key, path)


class LibraryObstore(Library):
    name = LIBRARY_OBSTORE
    client = "obstore"


class Raw(Contender):
    """One aioboto3 client for the whole run; ``config`` varies it for the tuning table."""

    name = RAW

    def __init__(self, endpoint: str, bucket: str, *, config: dict[str, Any] | None = None) -> None:
        super().__init__(endpoint, bucket)
        self.config = config or {}

    def _client_cm(self) -> Any:
        import aioboto3

        return aioboto3.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=botocore_config(**self.config),
        )

    async def open(self) -> None:
        self._cm = self._client_cm()
        self.client = await self._cm.__aenter__()

    async def close(self) -> None:
        await self._cm.__aexit__(None, None, None)

    async def put(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=self.bucket, Key=f"{ROOT}/{key}", Body=data)

    async def get(self, key: str) -> bytes:
        response = await self.client.get_object(Bucket=self.bucket, Key=f"{ROOT}/{key}")
        data: bytes = await response["Body"].read()
        return data

    async def count(self, prefix: str) -> int:
        paginator = self.client.get_paginator("list_objects_v2")
        total = 0
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{ROOT}/{prefix}/"):
            total += len(page.get("Contents") or ())
        return total

    async def upload(self, path: Path, key: str) -> None:
        await self.client.upload_file(
            str(path), self.bucket, f"{ROOT}/{key}", Config=_transfer_config()
        )

    async def download(self, key: str, path: Path) -> None:
        await self.client.download_file(
            self.bucket, f"{ROOT}/{key}", str(path), Config=_transfer_config()
        )


class Naive(Raw):
    """A new aioboto3 Session and client for every call."""

    name = NAIVE

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put(self, key: str, data: bytes) -> None:
        async with self._client_cm() as client:
            await client.put_object(Bucket=self.bucket, Key=f"{ROOT}/{key}", Body=data)

    async def get(self, key: str) -> bytes:
        async with self._client_cm() as client:
            response = await client.get_object(Bucket=self.bucket, Key=f"{ROOT}/{key}")
            data: bytes = await response["Body"].read()
            return data

    async def count(self, prefix: str) -> int:
        async with self._client_cm() as client:
            total = 0
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{ROOT}/{prefix}/"
            )
            async for page in pages:
                total += len(page.get("Contents") or ())
            return total

    async def upload(self, path: Path, key: str) -> None:
        async with self._client_cm() as client:
            await client.upload_file(
                str(path), self.bucket, f"{ROOT}/{key}", Config=_transfer_config()
            )

    async def download(self, key: str, path: Path) -> None:
        async with self._client_cm() as client:
            await client.download_file(
                self.bucket, f"{ROOT}/{key}", str(path), Config=_transfer_config()
            )


class S3fs(Contender):
    """fsspec's s3fs in asynchronous mode (its ``cat_file`` HEADs before each GET)."""

    name = S3FS

    async def open(self) -> None:
        import s3fs  # type: ignore[import-untyped]

        self.fs = s3fs.S3FileSystem(
            key=KEY_ID,
            secret=SECRET,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": REGION},
            config_kwargs={"s3": {"addressing_style": "path"}},
            asynchronous=True,
            skip_instance_cache=True,
            max_concurrency=PARALLEL,
        )
        await self.fs.set_session()

    async def close(self) -> None:
        await self.fs._s3creator.__aexit__(None, None, None)

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{ROOT}/{key}"

    async def put(self, key: str, data: bytes) -> None:
        await self.fs._pipe_file(self._path(key), data)

    async def get(self, key: str) -> bytes:
        data: bytes = await self.fs._cat_file(self._path(key))
        return data

    async def count(self, prefix: str) -> int:
        self.fs.invalidate_cache()  # s3fs caches listings: list for real each time
        return len(await self.fs._find(self._path(prefix)))

    async def upload(self, path: Path, key: str) -> None:
        await self.fs._put_file(str(path), self._path(key), chunksize=PART)

    async def download(self, key: str, path: Path) -> None:
        await self.fs._get_file(self._path(key), str(path))


class Obstore(Contender):
    """obstore's S3Store (Rust object_store; requests run on its own Tokio threads)."""

    name = OBSTORE

    async def open(self) -> None:
        from obstore.store import S3Store

        self.store = S3Store(
            self.bucket,
            prefix=ROOT,
            endpoint=self.endpoint,
            region=REGION,
            access_key_id=KEY_ID,
            secret_access_key=SECRET,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    async def put(self, key: str, data: bytes) -> None:
        import obstore

        await obstore.put_async(self.store, key, data)

    async def get(self, key: str) -> bytes:
        import obstore

        result = await obstore.get_async(self.store, key)
        return bytes(await result.bytes_async())

    async def count(self, prefix: str) -> int:
        import obstore

        total = 0
        async for batch in obstore.list(self.store, f"{prefix}/"):
            total += len(batch)
        return total

    async def upload(self, path: Path, key: str) -> None:
        import obstore

        await obstore.put_async(self.store, key, path, chunk_size=PART, max_concurrency=PARALLEL)

    async def download(self, key: str, path: Path) -> None:
        import obstore

        result = await obstore.get_async(self.store, key)
        with path.open("wb") as out:
            async for chunk in result.stream(min_chunk_size=PART):
                out.write(chunk)


FACTORIES: dict[str, type[Contender]] = {
    LIBRARY: Library,
    LIBRARY_OBSTORE: LibraryObstore,
    RAW: Raw,
    NAIVE: Naive,
    S3FS: S3fs,
    OBSTORE: Obstore,
}


def make(name: str, endpoint: str, bucket: str) -> Contender:
    return FACTORIES[name](endpoint, bucket)
