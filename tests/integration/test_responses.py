"""storage_response, save_upload and the error handlers over real HTTP, on a memory backend."""

from __future__ import annotations

import asyncio
import io
import time
import urllib.parse
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response, UploadFile
from starlette.datastructures import Headers

from file_storage import (
    MemoryStorageBackend,
    ObjectInfo,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from file_storage.fastapi import (
    StorageDep,
    UploadTooLargeError,
    content_disposition,
    get_storage,
    install_error_handlers,
    save_upload,
    storage_response,
)
from tests.conftest import FAKE_SECRET
from tests.integration.conftest import Serve

DATA = bytes(range(256)) * 4  # 1,024 bytes


class FaultyBackend(MemoryStorageBackend):
    """A memory backend whose hooks raise the error staged for (operation, key)."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: dict[tuple[str, str], StorageError] = {}
        self.chunks_streamed = 0
        self.streams_closed = 0

    def _fail(self, operation: str, key: str) -> None:
        fault = self.faults.get((operation, key))
        if fault is not None:
            raise fault

    async def _stat(self, key: str) -> ObjectInfo:
        self._fail("stat", key)
        return await super()._stat(key)

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        self._fail("stream", key)
        try:
            async for chunk in super()._stream(key, start, end, chunk_size, if_match):
                self.chunks_streamed += 1
                yield chunk
        finally:
            self.streams_closed += 1


def make_app(backend: MemoryStorageBackend) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.dependency_overrides[get_storage] = lambda: backend

    @app.api_route("/objects/{key:path}", methods=["GET", "HEAD"])
    async def download(
        key: str,
        request: Request,
        storage: StorageDep,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Response:
        return await storage_response(
            storage, key, request, filename=filename, content_type=content_type
        )

    @app.post("/uploads/{key:path}", status_code=201)
    async def upload(
        key: str, file: UploadFile, storage: StorageDep, max_bytes: int | None = None
    ) -> dict[str, str]:
        return {"key": await save_upload(storage, key, file, max_bytes=max_bytes)}

    return app


@pytest.fixture
def backend() -> FaultyBackend:
    return FaultyBackend()


@pytest.fixture
async def server(serve: Serve, backend: FaultyBackend) -> str:
    await backend.save("d/data.bin", DATA)
    await backend.save("d/empty.txt", b"")
    return serve(make_app(backend))


@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=0-1,5-6",  # several ranges: the whole object
        "bytes=0-1, 3-",
        "bytes=abc",
        "bytes=5-2",  # last before first: invalid, ignored
        "items=0-1",  # another unit
        "bytes=",
        "bytes=-",
    ],
)
async def test_ranges_to_ignore_get_the_whole_object(
    server: str, client: httpx.AsyncClient, range_header: str
) -> None:
    response = await client.get("/objects/d/data.bin", headers={"Range": range_header})
    assert response.status_code == 200
    assert response.content == DATA
    assert "content-range" not in response.headers


async def test_suffix_longer_than_the_object_is_the_whole_object_as_206(
    server: str, client: httpx.AsyncClient
) -> None:
    response = await client.get("/objects/d/data.bin", headers={"Range": "bytes=-99999"})
    assert response.status_code == 206
    assert response.content == DATA
    assert response.headers["content-range"] == f"bytes 0-1023/{len(DATA)}"


@pytest.mark.parametrize(
    ("key", "range_header"),
    [("d/data.bin", "bytes=-0"), ("d/data.bin", "bytes=1024-"), ("d/empty.txt", "bytes=0-")],
)
async def test_unsatisfiable_range_is_416(
    server: str, client: httpx.AsyncClient, key: str, range_header: str
) -> None:
    response = await client.get(f"/objects/{key}", headers={"Range": range_header})
    assert response.status_code == 416
    size = len(DATA) if key == "d/data.bin" else 0
    assert response.headers["content-range"] == f"bytes */{size}"


async def test_suffix_range_of_an_empty_object_is_an_empty_200(
    server: str, client: httpx.AsyncClient
) -> None:
    # RFC 9110, 14.1.2: the one satisfiable range of an empty object, and no 206 can
    # spell it: not a 416 (which says no range was satisfiable), the whole (empty) object
    response = await client.get("/objects/d/empty.txt", headers={"Range": "bytes=-5"})
    assert (response.status_code, response.content) == (200, b"")
    assert "content-range" not in response.headers


async def test_empty_object_is_an_empty_200(server: str, client: httpx.AsyncClient) -> None:
    response = await client.get("/objects/d/empty.txt")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"


async def test_if_range_with_current_etag_gives_the_range_else_everything(
    server: str, client: httpx.AsyncClient
) -> None:
    etag = (await client.head("/objects/d/data.bin")).headers["etag"]
    fresh = await client.get(
        "/objects/d/data.bin", headers={"Range": "bytes=0-3", "If-Range": etag}
    )
    assert fresh.status_code == 206
    assert fresh.content == DATA[:4]
    stale = await client.get(
        "/objects/d/data.bin", headers={"Range": "bytes=0-3", "If-Range": '"stale"'}
    )
    assert stale.status_code == 200
    assert stale.content == DATA


@pytest.mark.parametrize("tag", ["*", "{etag}", "W/{etag}", '"x", {etag}'])
async def test_if_none_match_variants_give_304(
    server: str, client: httpx.AsyncClient, tag: str
) -> None:
    etag = (await client.head("/objects/d/data.bin")).headers["etag"]
    response = await client.get(
        "/objects/d/data.bin", headers={"If-None-Match": tag.format(etag=etag)}
    )
    assert response.status_code == 304
    assert response.headers["etag"] == etag
    assert "content-length" not in response.headers


async def test_if_modified_since(server: str, client: httpx.AsyncClient) -> None:
    last_modified = (await client.head("/objects/d/data.bin")).headers["last-modified"]
    same = await client.get("/objects/d/data.bin", headers={"If-Modified-Since": last_modified})
    assert same.status_code == 304
    old = await client.get(
        "/objects/d/data.bin", headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}
    )
    assert old.status_code == 200


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
        (
            'Crème "brûlée".pdf',
            'attachment; filename="Creme _brulee_.pdf"; '
            "filename*=UTF-8''Cr%C3%A8me%20%22br%C3%BBl%C3%A9e%22.pdf",
        ),
        ("../../etc/passwd", "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"),
        (
            "отчёт.txt",
            'attachment; filename="_____.txt"; '
            "filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.txt",
        ),
        (
            "a\r\nSet-Cookie: x=1",
            "attachment; filename=\"aSet-Cookie_ x=1\"; filename*=UTF-8''aSet-Cookie%3A%20x%3D1",
        ),
    ],
    ids=["ascii", "accents-and-quotes", "path", "cyrillic", "header-injection"],
)
async def test_content_disposition_is_safe(
    server: str, client: httpx.AsyncClient, filename: str, expected: str
) -> None:
    response = await client.head("/objects/d/data.bin", params={"filename": filename})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == expected
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "content_type",
    ["text/html\r\nSet-Cookie: session=stolen", "text/plain\nX: 1", "тип/вид", "a\x00b", " "],
)
async def test_a_content_type_that_is_no_header_value_is_400_not_sent(
    server: str, client: httpx.AsyncClient, content_type: str
) -> None:
    # an application passing a type it was given (a query parameter) must get a 400, as
    # save() refuses such a type, never a split response nor a server error
    response = await client.get("/objects/d/data.bin", params={"content_type": content_type})
    assert response.status_code == 400
    assert "set-cookie" not in response.headers
    assert "content_type" in response.json()["detail"]


@pytest.mark.parametrize(
    "sent_type",
    ["image/png, text/html", "image/png,text/html", 'image/png; a="b", text/html', "image/png/x"],
)
async def test_an_uploaded_type_that_is_no_single_media_type_is_served_as_octet_stream(
    server: str, client: httpx.AsyncClient, sent_type: str
) -> None:
    # a browser takes the last type of a list (Fetch, "extract a MIME type"): an app that
    # checks the stored type (an image: shown inline) must not have a page served instead
    files = {"file": ("a.png", b"<script>alert(1)</script>", sent_type)}
    assert (await client.post("/uploads/u/a.png", files=files)).status_code == 201
    response = await client.get("/objects/u/a.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"


@pytest.mark.parametrize(
    "sent_type", ["text/javascript", "Application/JavaScript; charset=utf-8", "text/jscript"]
)
async def test_an_uploaded_script_is_served_as_octet_stream(
    server: str, client: httpx.AsyncClient, sent_type: str
) -> None:
    # a page of the app's origin could load it as its own script (tests/integration/
    # test_browser_scripts.py): only a type the app passes itself says "script"
    files = {"file": ("a.js", b"alert(document.cookie)", sent_type)}
    assert (await client.post("/uploads/u/a.js", files=files)).status_code == 201
    stored = await client.get("/objects/u/a.js")
    assert stored.headers["content-type"] == "application/octet-stream"
    vouched = await client.get("/objects/u/a.js", params={"content_type": "text/javascript"})
    assert vouched.headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(
    "sent_type",
    ["image/png", 'text/plain; charset="utf-8"', 'application/pdf; name="a, b.pdf"', "a/b ; c=d"],
)
async def test_an_uploaded_media_type_with_parameters_is_served_as_stored(
    server: str, client: httpx.AsyncClient, sent_type: str
) -> None:
    files = {"file": ("a.png", b"data", sent_type)}
    assert (await client.post("/uploads/u/a.png", files=files)).status_code == 201
    response = await client.get("/objects/u/a.png")
    assert response.headers["content-type"] == sent_type


@pytest.mark.parametrize(
    ("error", "status", "detail"),
    [
        (ObjectNotFoundError(), 404, "stat 'd/data.bin': object not found"),
        (StorageUnavailableError(f"timeout talking to {FAKE_SECRET}"), 503, None),
        (StoragePermissionError(f"AccessDenied for {FAKE_SECRET}"), 502, None),
        (StorageConfigError(f"NoSuchBucket, key {FAKE_SECRET}"), 500, None),
        (StorageError(f"I/O error {FAKE_SECRET}"), 500, None),
    ],
)
async def test_storage_errors_map_to_statuses_without_secrets(
    server: str,
    client: httpx.AsyncClient,
    backend: FaultyBackend,
    caplog: pytest.LogCaptureFixture,
    error: StorageError,
    status: int,
    detail: str | None,
) -> None:
    backend.faults["stat", "d/data.bin"] = error
    response = await client.get("/objects/d/data.bin")
    assert response.status_code == status
    assert FAKE_SECRET not in response.text
    body = response.json()
    assert set(body) == {"detail"}
    if detail is not None:
        assert body["detail"] == detail


async def test_an_object_vanishing_before_the_body_starts_is_404(
    server: str, client: httpx.AsyncClient, backend: FaultyBackend
) -> None:
    backend.faults["stream", "d/data.bin"] = ObjectNotFoundError()
    response = await client.get("/objects/d/data.bin")
    assert response.status_code == 404  # not a 200 with a broken body


async def test_a_client_leaving_mid_download_stops_and_closes_the_stream(
    server: str, client: httpx.AsyncClient, backend: FaultyBackend
) -> None:
    await backend.save("d/big.bin", bytes(64 * 2**20))  # 64 chunks of 1 MiB
    async with client.stream("GET", "/objects/d/big.bin") as response:
        assert response.status_code == 200
        await anext(response.aiter_raw())
    # closing a half-read response closes its connection; the server notices and stops
    deadline = time.monotonic() + 10
    while backend.streams_closed == 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # another thread's loop: no event to await across threads
    assert backend.streams_closed == 1
    assert backend.chunks_streamed < 64


async def test_invalid_key_is_400(server: str, client: httpx.AsyncClient) -> None:
    response = await client.get("/objects/a%5Cb")
    assert response.status_code == 400


async def test_save_upload_over_max_bytes_is_413_and_stores_nothing(
    server: str, client: httpx.AsyncClient, backend: FaultyBackend
) -> None:
    files = {"file": ("a.bin", b"x" * 101)}
    response = await client.post("/uploads/u/a.bin", files=files, params={"max_bytes": 100})
    assert response.status_code == 413
    assert response.json() == {
        "detail": "save_upload 'u/a.bin': the upload is larger than the 100 B allowed"
    }
    assert not await backend.exists("u/a.bin")
    files = {"file": ("a.bin", b"x" * 100)}
    ok = await client.post("/uploads/u/a.bin", files=files, params={"max_bytes": 100})
    assert ok.status_code == 201
    assert await backend.load("u/a.bin") == b"x" * 100


@pytest.mark.parametrize(
    ("sent_type", "stored_type"),
    [("image/png", "image/png"), ("application/octet-stream", "text/plain")],
)
async def test_save_upload_keeps_the_clients_type_unless_unknown(
    server: str,
    client: httpx.AsyncClient,
    backend: FaultyBackend,
    sent_type: str,
    stored_type: str,
) -> None:
    files = {"file": ("x", b"data", sent_type)}
    assert (await client.post("/uploads/u/x.txt", files=files)).status_code == 201
    assert (await backend.stat("u/x.txt")).content_type == stored_type


async def test_save_upload_of_unknown_size_stops_at_max_bytes() -> None:
    # an UploadFile whose size was not recorded: the limit is enforced while streaming
    backend = MemoryStorageBackend()
    await backend.save("u/a.bin", b"old")
    upload = UploadFile(io.BytesIO(b"x" * (3 * 2**20)), filename="a.bin", headers=Headers())
    with pytest.raises(UploadTooLargeError) as caught:
        await save_upload(backend, "u/a.bin", upload, max_bytes=2**20 + 1)
    assert caught.value.key == "u/a.bin"
    assert caught.value.limit == 2**20 + 1
    assert await backend.load("u/a.bin") == b"old"  # the old object is untouched


async def test_save_upload_stores_the_headers_it_is_given() -> None:
    backend = MemoryStorageBackend()
    upload = UploadFile(io.BytesIO(b"movie"), filename="Отпуск 2026.mp4", headers=Headers())
    disposition = content_disposition("Отпуск 2026.mp4")
    await save_upload(
        backend,
        "u/0a1b.mp4",
        upload,
        cache_control="private, max-age=60",
        content_disposition=disposition,
    )
    info = await backend.stat("u/0a1b.mp4")
    assert info.content_disposition == disposition
    assert info.cache_control == "private, max-age=60"
    assert "filename*=UTF-8''%D0%9E%D1%82%D0%BF%D1%83%D1%81%D0%BA%202026.mp4" in disposition


async def test_a_very_long_filename_is_cut_to_what_a_file_system_stores(
    server: str, client: httpx.AsyncClient
) -> None:
    # 2,000 two-byte letters: 4,000 UTF-8 bytes, 12,000 once percent-encoded (a header
    # past proxies' 4-8 KiB buffers, and S3's 8 KiB of request headers when stored)
    response = await client.head("/objects/d/data.bin", params={"filename": "é" * 2000 + ".pdf"})
    assert response.status_code == 200
    header = response.headers["content-disposition"]
    assert len(header) < 1200
    encoded = header.split("filename*=UTF-8''")[1]
    name = urllib.parse.unquote(encoded)
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 255
    assert set(name.removesuffix(".pdf")) == {"é"}


async def test_a_stored_type_of_many_empty_parameters_is_judged_in_linear_time() -> None:
    # an uploader chooses the stored type (save_upload keeps the client's): each ";" and
    # its spaces could be matched two ways, so 60 characters took a regex 40 s to refuse
    backend = MemoryStorageBackend()
    stored = "text/plain" + ";  " * 16 + "@"
    await backend.save("d/a.txt", b"x", content_type=stored)
    transport = httpx.ASGITransport(app=make_app(backend))
    start = time.process_time()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/objects/d/a.txt")
    assert time.process_time() - start < 2.0  # CPU, not the clock: microseconds once linear
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
