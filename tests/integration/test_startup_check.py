"""storage_lifespan checks the store at start-up: a bad bucket or root fails the start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from file_storage import (
    StorageConfigError,
    StorageUnavailableError,
    factory,
)
from file_storage.fastapi import storage_lifespan
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.integration.uvicorn_process import clean_env, free_port, uvicorn_command
from tests.s3util import closed_port

MISSING_BUCKET = "no-such-bucket-for-file-storage"


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "STORAGE_TYPE": "S3",
        "STORAGE_S3_BUCKET": bucket,
        "STORAGE_S3_ENDPOINT_URL": endpoint,
        "STORAGE_S3_ADDRESSING_STYLE": "path",
        "STORAGE_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
        "STORAGE_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
        # an unreachable store fails fast: one attempt, a short connect timeout
        "STORAGE_S3_MAX_ATTEMPTS": "1",
        "STORAGE_S3_CONNECT_TIMEOUT": "2",
    }


def set_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.s3
async def test_a_missing_bucket_fails_the_start(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    set_env(monkeypatch, s3_env(moto_endpoint, MISSING_BUCKET))
    with pytest.raises(StorageConfigError) as info:
        async with storage_lifespan():
            pytest.fail("the app started")
    assert info.value.operation == "check"
    assert str(info.value) == f"check: bucket {MISSING_BUCKET!r} does not exist"
    assert factory._backend is None  # closed and forgotten


@pytest.mark.s3
async def test_an_existing_bucket_starts(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, s3_bucket: str
) -> None:
    set_env(monkeypatch, s3_env(moto_endpoint, s3_bucket))
    async with storage_lifespan():
        assert factory._backend is not None
    assert factory._backend is None


async def test_an_unreachable_endpoint_fails_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, s3_env(f"http://127.0.0.1:{closed_port()}", "bucket"))
    with pytest.raises(StorageUnavailableError) as info:
        async with storage_lifespan():
            pytest.fail("the app started")
    assert info.value.operation == "check"
    assert "unreachable" in str(info.value)
    assert FAKE_SECRET not in str(info.value)
    assert factory._backend is None


async def test_an_unreachable_endpoint_with_a_fallback_spool_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the spool exists to ride out an outage: a restart during one must not fail
    set_env(monkeypatch, s3_env(f"http://127.0.0.1:{closed_port()}", "bucket"))
    monkeypatch.setenv("STORAGE_S3_FALLBACK_PATH", str(tmp_path / "spool"))
    async with storage_lifespan():
        assert factory._backend is not None


async def test_a_local_root_that_is_a_file_fails_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_bytes(b"x")
    monkeypatch.setenv("STORAGE_TYPE", "LOCAL")
    monkeypatch.setenv("STORAGE_LOCAL_PATH", str(tmp_path / "not-a-folder"))
    with pytest.raises(StorageConfigError, match="is not a folder") as info:
        async with storage_lifespan():
            pytest.fail("the app started")
    assert info.value.operation == "check"


async def test_a_missing_local_root_is_created_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = tmp_path / "a" / "storage"
    monkeypatch.setenv("STORAGE_TYPE", "LOCAL")
    monkeypatch.setenv("STORAGE_LOCAL_PATH", str(root))
    async with storage_lifespan():
        assert root.is_dir()
        assert list(root.iterdir()) == []  # the test write left nothing behind


@pytest.mark.s3
def test_uvicorn_with_a_missing_bucket_exits_with_one_clear_line(
    moto_endpoint: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        uvicorn_command("examples.app:app", free_port()),
        cwd=tmp_path,
        env=clean_env(s3_env(moto_endpoint, MISSING_BUCKET)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    clear = f"StorageConfigError: check: bucket {MISSING_BUCKET!r} does not exist"
    assert [line for line in result.stderr.splitlines() if clear in line] == [
        f"file_storage.errors.{clear}"
    ]
    assert "Application startup failed" in result.stderr
    assert FAKE_SECRET not in result.stderr
