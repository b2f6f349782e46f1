"""The HEAD a presigned GET of S3 makes to learn the type it signs, answered otherwise
than 200 or 404 (through the fault proxy in front of moto)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from file_storage import StorageUnavailableError
from tests.faults.proxy import FaultProxy
from tests.s3util import MakeBackend

pytestmark = pytest.mark.s3


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_get_url_of_a_key_hidden_by_a_403_is_signed_for_its_keys_type(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # S3 answers a HEAD of a missing key 403, not 404, to a credential without
    # s3:ListBucket: a URL for an upload still to come is signed as for a missing object
    backend = make_backend(client=client)
    proxy.fail_next(1, status=403, code="AccessDenied", match="HEAD")
    query = parse_qs(urlsplit(await backend.get_presigned_url("later.html")).query)
    assert query["response-content-type"] == ["text/html"]
    assert query["response-content-disposition"] == ["attachment"]


async def test_get_url_whose_head_fails_is_not_signed(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    # without the type it would pin, no URL: a page could be served inline
    backend = make_backend()
    await backend.save("page.html", b"<p>", content_type="text/html")
    proxy.fail_next(10, status=503, code="SlowDown", match="HEAD")
    with pytest.raises(StorageUnavailableError) as info:
        await backend.get_presigned_url("page.html")
    proxy.clear()
    assert (info.value.operation, info.value.key) == ("get_presigned_url", "page.html")
