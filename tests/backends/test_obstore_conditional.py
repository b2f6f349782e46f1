"""The signed conditional DELETE of the GCS and Azure backends (``_obstore._conditional``)
against a loopback server answering what a faulty store would: each answer is one outcome
or one typed error, retried only when worth it, and no message holds the signed URL."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from file_storage import (
    MemoryStorageBackend,
    StorageBackend,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
    migrate,
)
from file_storage.backends._obstore import _conditional
from file_storage.backends._obstore._conditional import ATTEMPTS, send_delete

SECRET = "sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"


class _Server(ThreadingHTTPServer):
    answers: list[int]  # one status per request; -1: close the connection unanswered
    seen: list[dict[str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_DELETE(self) -> None:
        self.server.seen.append(dict(self.headers.items()))
        status = self.server.answers.pop(0) if self.server.answers else 500
        if status < 0:
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.answers, httpd.seen = [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/bucket/storage/a.txt?sv=1&{SECRET}"


@pytest.mark.parametrize(
    ("answers", "outcome"),
    [
        ([204], "deleted"),
        ([202], "deleted"),
        ([404], "gone"),
        ([412], "changed"),
        ([503, 204], "deleted"),
        ([-1, 429, 200], "deleted"),
    ],
)
async def test_each_answer_is_one_outcome(
    server: _Server, answers: list[int], outcome: str
) -> None:
    server.answers = list(answers)
    headers = {"If-Match": '"0x8D"'}
    assert await send_delete(_url(server), headers, "Azure") == outcome
    assert len(server.seen) == len(answers)
    assert all(seen["If-Match"] == '"0x8D"' for seen in server.seen)


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ([403], StoragePermissionError),
        ([401], StoragePermissionError),
        ([503] * ATTEMPTS, StorageUnavailableError),
        ([-1] * ATTEMPTS, StorageUnavailableError),
        ([400], StorageError),
    ],
)
async def test_each_failure_is_one_typed_error_without_the_url(
    server: _Server, answers: list[int], error: type[StorageError]
) -> None:
    server.answers = list(answers)
    with pytest.raises(error) as info:
        await send_delete(_url(server), {"x-goog-if-generation-match": "7"}, "GCS")
    assert len(server.seen) == len(answers)  # 4xx never retried
    for text in (str(info.value), repr(info.value)):
        assert "sig=" not in text
        assert "127.0.0.1" not in text
    assert info.value.__cause__ is None  # http.client's errors may hold the request


@pytest.fixture(
    params=[
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("azure", marks=pytest.mark.azure),
    ]
)
def cloud(request: pytest.FixtureRequest) -> StorageBackend:
    backend: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return backend


async def test_a_moved_source_whose_delete_answer_was_lost_is_counted_deleted(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the conditional DELETE of migrate's moved source landed, its answer was lost, and
    # the resend found nothing (404): the source is deleted, so its quota frees it and
    # its "deleted" event is sent, as after a plain delete
    backend = cloud
    backend.set_quota("", 1000)
    await backend.save("m/a.bin", b"x" * 600)
    events: list[str] = []
    backend.subscribe(lambda event: events.append(f"{event.type} {event.key}"))
    send = _conditional._send
    lost: list[str] = []

    def landed_then_lost(url: str, headers: Mapping[str, str]) -> int:
        status = send(url, headers)
        if not lost:
            lost.append(url)
            raise ConnectionResetError("the answer was lost")
        return status

    monkeypatch.setattr(_conditional, "_send", landed_then_lost)
    report = await migrate(backend, MemoryStorageBackend(), delete_source=True)
    monkeypatch.undo()
    assert lost, "the conditional DELETE was not sent"
    assert (report.copied, report.failed) == (1, {})
    assert await backend.list_files() == []
    assert events == ["deleted m/a.bin"]
    assert (await backend.get_usage()).used == 0
