"""The signed router of a process whose limits another process changed through Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from file_storage.fastapi import make_signed_url_router
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer

SIGNED = {"base_url": "http://test/files", "signing_key": "k" * 32}


async def test_a_put_declaring_a_length_checks_the_limit_another_process_raised(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, **SIGNED)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        assert (await a.get_usage()).limit == 1000
        b.set_quota("", 5000)  # raised for every process
        assert (await b.get_usage()).limit == 5000
        app = FastAPI()
        app.include_router(make_signed_url_router(get_backend=lambda: a), prefix="/files")
        url = await a.get_presigned_url("big.bin", method="PUT")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.put(url, content=b"x" * 2000)  # declares its length
        assert response.status_code == 200, response.text
        assert await b.get_size("big.bin") == 2000
        assert (await b.get_usage()).used == 2000
