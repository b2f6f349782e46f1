"""The S3 start-up check under staged answers: refused credentials fail the start."""

from __future__ import annotations

import pytest

from file_storage import StoragePermissionError, factory
from file_storage.fastapi import storage_lifespan
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.s3


async def test_refused_credentials_fail_the_start(
    monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy, s3_bucket: str
) -> None:
    for name, value in {
        "STORAGE_TYPE": "S3",
        "STORAGE_S3_BUCKET": s3_bucket,
        "STORAGE_S3_ENDPOINT_URL": proxy.endpoint,
        "STORAGE_S3_ADDRESSING_STYLE": "path",
        "STORAGE_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
        "STORAGE_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    proxy.fail_next(1, status=403, code="AccessDenied", match=f"HEAD /{s3_bucket}")
    with pytest.raises(StoragePermissionError) as info:
        async with storage_lifespan():
            pytest.fail("the app started")
    assert info.value.operation == "check"
    assert FAKE_SECRET not in str(info.value)
    assert factory._backend is None
