"""A plain ``uvicorn app:app`` (no logging configuration) reports each 5xx in one line.

The error handlers answer a StorageError themselves, so the server never sees it: the
handler writes the line uvicorn would have written, on stderr, naming the status, the
operation, the key and the cause. DEBUG and INFO lines of the library stay silent.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.uvicorn_process import UvicornProcess


@pytest.fixture(scope="module")
def stderr_after_requests(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Start the staged app, send one request of each kind, stop it; its whole stderr."""
    cwd: Path = tmp_path_factory.mktemp("uvicorn")
    server = UvicornProcess("tests.integration.staged_app:app", {}, cwd)
    try:
        server.wait_until_listening()
        with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30) as http:
            for path, status in [
                ("/objects/ok.txt", 200),
                ("/objects/missing.txt", 404),
                ("/objects/unavailable/a.txt", 503),
                ("/objects/denied/b.txt", 502),
                ("/objects/broken/c.txt", 500),
            ]:
                assert http.get(path, params={"signature": "s3cr3t-sig"}).status_code == status
    finally:
        stderr = server.stop()
    return stderr


def ours(stderr: str) -> list[str]:
    """stderr without uvicorn's own lifecycle and access lines."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and "HTTP/1.1" not in line and not line.startswith("INFO:")
    ]


def test_each_5xx_leaves_one_line_with_operation_key_and_cause(stderr_after_requests: str) -> None:
    assert ours(stderr_after_requests) == [
        "ERROR:    storage error answered with 503: load 'unavailable/a.txt': "
        "S3 unavailable after 5 attempts (503 SlowDown) (cause: ConnectionResetError)",
        "ERROR:    storage error answered with 502: load 'denied/b.txt': "
        "access denied by S3 (AccessDenied, HTTP 403)",
        "ERROR:    storage error answered with 500: load 'broken/c.txt': "
        "I/O error: Input/output error (cause: OSError)",
    ]


def test_the_line_holds_no_query_string(stderr_after_requests: str) -> None:
    assert not [line for line in ours(stderr_after_requests) if "s3cr3t-sig" in line]


def test_debug_and_info_lines_stay_silent(stderr_after_requests: str) -> None:
    # the successful load (DEBUG "done in") and the 404 (DEBUG "failed") print nothing
    assert "ok.txt" not in "\n".join(ours(stderr_after_requests))
    assert "missing.txt" not in "\n".join(ours(stderr_after_requests))
