"""A conditional S3 write whose answer was lost: the client sends it again, and S3
refuses the resend because of the first try itself, which landed. The caller is told
the condition failed (nothing tells the two tries' objects apart), and the quota counts
what the key holds, never less."""

from __future__ import annotations

import pytest

from file_storage import PreconditionFailedError, StorageQuotaExceededError
from tests.faults.conftest import MakeBackend
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.s3


async def test_a_create_refused_by_its_own_landed_try_is_counted(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend(max_size_bytes=10_000)
    await backend.save("other.bin", b"o" * 100)
    proxy.cut_response_after(0, match="PUT")  # stored, never answered: resent
    with pytest.raises(PreconditionFailedError):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert proxy.count("PUT /") == 3  # other.bin, then k.bin twice
    assert await backend.load("k.bin") == b"k" * 600  # the first try landed...
    assert (await backend.get_usage("")).used == 700  # ...so the quota counts it
    # and a quota that is full by it refuses the next write
    backend.set_quota("", 750)
    with pytest.raises(StorageQuotaExceededError):
        await backend.save("more.bin", b"m" * 100)
