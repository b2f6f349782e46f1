"""Attacks on the S3 conditional write refused by its own landed try (s3._landed): a
write that landed must succeed however the server spells its object back, and however
the client retried; one that did not must stay refused."""

from __future__ import annotations

import base64

import pytest

from file_storage import ObjectEvent, PreconditionFailedError
from tests.faults import proxy as proxy_module
from tests.faults.conftest import MakeBackend
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.s3, pytest.mark.parametrize("client", ["aioboto3", "obstore"])]

STATUS = "x-test-status"  # a pseudo-header: the answer's status line is replaced


@pytest.fixture
def status_rewrites(monkeypatch: pytest.MonkeyPatch) -> None:
    """``proxy.rewrite_header(STATUS, "500 Internal Server Error")`` forwards the request
    (the server does the work) and answers with that status instead of the server's."""
    original = proxy_module._with_header

    def rewritten(answer: bytes, name: str, value: str) -> bytes:
        if name != STATUS:
            return original(answer, name, value)
        _, rest = answer.split(b"\r\n", 1)
        return f"HTTP/1.1 {value}\r\n".encode() + rest

    monkeypatch.setattr(proxy_module, "_with_header", rewritten)


async def test_a_create_stored_and_answered_500_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, status_rewrites: None
) -> None:
    # S3's 500 InternalError may come after the object was stored; both clients retry a
    # 5xx, and the retry is refused because of the first try's object
    backend = make_backend(max_size_bytes=10_000, client=client)
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    proxy.rewrite_header(STATUS, "500 Internal Server Error", match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert proxy.count("PUT /") == 2
    info = await backend.stat("k.bin")
    assert seen == [ObjectEvent("created", "k.bin", 600, info.etag)]
    assert (await backend.get_usage("")).used == 600


async def test_a_create_refused_after_a_500_that_stored_nothing_is_refused(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # the first try was answered 500 without reaching the server; the retry is refused
    # by another writer's object: looked at, not this write's, refused
    backend = make_backend(client=client)
    await backend.save("k.bin", b"theirs" * 100)
    proxy.fail_next(status=500, code="InternalError", match="PUT")
    with pytest.raises(PreconditionFailedError, match="exists"):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"theirs" * 100


def _b_words(text: str) -> str:
    """``text`` as one RFC 2047 B encoded-word (as a server may re-encode it)."""
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


@pytest.mark.parametrize("spelling", ["as sent", "re-encoded"])
async def test_a_create_with_non_ascii_metadata_refused_by_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, spelling: str
) -> None:
    # S3 decodes RFC 2047 metadata values when storing and encodes them again when
    # answering: the words may differ from the ones sent, the value is the same
    value = "Zoë Ünicode " * 8  # longer than one encoded-word
    backend = make_backend(client=client)
    proxy.cut_response_after(0, match="PUT")
    if spelling == "re-encoded":
        proxy.rewrite_header("x-amz-meta-owner", _b_words(value), match="HEAD")
    await backend.save("k.bin", b"k" * 600, overwrite=False, metadata={"owner": value})
    assert (await backend.stat("k.bin")).metadata == {"owner": value}


async def test_an_empty_create_refused_by_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    backend = make_backend(max_size_bytes=10_000, client=client)
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    proxy.cut_response_after(0, match="PUT")
    await backend.save("empty.bin", b"", overwrite=False)
    info = await backend.stat("empty.bin")
    assert seen == [ObjectEvent("created", "empty.bin", 0, info.etag)]


async def test_a_create_refused_409_after_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # the resend meets a concurrent-write conflict (409) caused by its own first try
    backend = make_backend(client=client)
    proxy.cut_response_after(0, match="PUT")
    proxy.fail_next(status=409, code="ConditionalRequestConflict", match="PUT")
    if client == "obstore":  # not resent: an unknown outcome, settled by the look
        proxy.clear()
        proxy.cut_response_after(0, match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"k" * 600
