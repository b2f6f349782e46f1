"""The example service under ``uvicorn --workers 4`` keeps a cap shared by its workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import tests.integration.uvicorn_process as up
from file_storage import LocalStorageBackend
from tests.integration.uvicorn_process import UvicornProcess
from tests.quota_redis.server import RedisServer

CAP = 20_000  # bytes: 20 uploads of 1 kB
UPLOADS = 60


async def test_four_uvicorn_workers_keep_the_service_under_its_cap(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = up.uvicorn_command
    monkeypatch.setattr(
        up, "uvicorn_command", lambda app, port: [*original(app, port), "--workers", "4"]
    )
    root = tmp_path / "storage"
    env = {
        "STORAGE_TYPE": "LOCAL",
        "STORAGE_LOCAL_PATH": str(root),
        "STORAGE_LOCAL_MAX_SIZE_GB": str(CAP / 10**9),
        "STORAGE_LOCAL_BASE_URL": "http://127.0.0.1/files",
        "STORAGE_LOCAL_SIGNING_KEY": "k" * 48,
        "STORAGE_QUOTA_REDIS_URL": redis_server.url,
        "STORAGE_QUOTA_REDIS_NAMESPACE": namespace,
    }
    server = UvicornProcess("examples.app:app", env, tmp_path)
    try:
        server.wait_until_listening()
        limits = httpx.Limits(max_connections=UPLOADS)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as http:

            async def upload(i: int) -> int:
                files = {"file": (f"f{i}.bin", b"x" * 1000, "application/octet-stream")}
                return (await http.post("/api/files", files=files)).status_code

            codes = await asyncio.gather(*(upload(i) for i in range(UPLOADS)))
    finally:
        stderr = server.stop()
    assert set(codes) <= {201, 413}, stderr
    assert codes.count(201) == CAP // 1000
    async with LocalStorageBackend(
        root, quota_redis_url=redis_server.url, quota_redis_namespace=namespace
    ) as storage:
        stored = await storage.get_total_size()
        assert stored == CAP
        assert (await storage.get_usage()).used == stored
