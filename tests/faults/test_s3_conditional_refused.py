"""A conditional S3 write refused on its first try (no resend: the object refusing it
is another writer's) leaves that object and the quota as they were: nothing of the
write is stored, so nothing of it is counted or taken back."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from file_storage import PreconditionFailedError, S3StorageBackend
from tests.faults.conftest import MakeBackend
from tests.faults.proxy import FaultProxy
from tests.quota_redis.ledger import run_out_leases
from tests.quota_redis.server import RedisServer

pytestmark = pytest.mark.s3


async def test_a_create_refused_by_another_writers_object_never_takes_it_back(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two servers on one Redis ledger (limit 1000). a's create of k.bin stalls past its
    # lease, b fills the quota meanwhile, and another tool writes k.bin straight to the
    # bucket (600 bytes the ledger does not count yet). S3 refuses a's create on its
    # first try: the object is the other tool's, and stays
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": uuid.uuid4().hex}
    a: S3StorageBackend = make_backend(max_size_bytes=1000, **options)
    b: S3StorageBackend = make_backend(max_size_bytes=1000, **options)
    reserve = a._quotas.reserve

    async def stalled(*args: Any, **kwargs: Any) -> Any:
        held = await reserve(*args, **kwargs)
        await run_out_leases(redis_server, options["quota_redis_namespace"])
        await b.save("other.bin", b"b" * 800)  # fits now, and takes the space
        raw.put_object(Bucket=s3_bucket, Key="storage/k.bin", Body=b"o" * 600)
        return held

    monkeypatch.setattr(a._quotas, "reserve", stalled)
    with pytest.raises(PreconditionFailedError):
        await a.save("k.bin", b"k" * 300, overwrite=False)
    assert proxy.count("PUT /") == 2  # other.bin, k.bin once: refused on its first try
    assert raw.get_object(Bucket=s3_bucket, Key="storage/k.bin")["Body"].read() == b"o" * 600


@pytest.mark.parametrize("lost", [False, True], ids=["another-writer", "own-try-lost"])
async def test_a_refused_create_on_a_versioned_bucket_counts_each_version_once(
    make_backend: MakeBackend, proxy: FaultProxy, lost: bool
) -> None:
    # the prior version stays counted, and the object at the key counted once, as the
    # latest version: another writer's, which refused the create, or the create's own
    # first try, which landed (its answer lost: the create is done)
    backend = make_backend(max_size_bytes=10_000)
    await backend.set_versioning(True)
    await backend.save("k.bin", b"a" * 100)
    if lost:
        await backend.delete("k.bin")  # a prior version of 100 bytes, nothing latest
        proxy.cut_response_after(0, match="PUT")  # stored, never answered: resent
    else:
        await backend.save("k.bin", b"b" * 200)
    if lost:
        await backend.save("k.bin", b"c" * 600, overwrite=False)
    else:
        with pytest.raises(PreconditionFailedError):
            await backend.save("k.bin", b"c" * 600, overwrite=False)
    assert (await backend.get_usage("")).used == (700 if lost else 300)
    versions = await backend.list_versions("k.bin")
    assert sum(v.size for v in versions) == (700 if lost else 300)
