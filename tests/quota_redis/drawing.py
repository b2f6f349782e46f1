"""Helpers of the allowance tests (local disk drawing on its share of a quota)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from file_storage import LocalStorageBackend
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


def drawing(
    root: Path, server: RedisServer, namespace: str, **options: object
) -> LocalStorageBackend:
    """A local backend whose Redis ledger draws on allowances."""
    return local(root, server, namespace, allowances=True, **options)


async def drawing_now(backend: LocalStorageBackend, prefix: str = "") -> None:
    """``backend``'s next writes under ``prefix`` draw on its allowance: it has
    acknowledged every change Redis told it of (a bounded loop of its calls)."""
    book = backend._quotas._book  # type: ignore[attr-defined]
    for _ in range(50):
        await book.call(describe=[prefix])
        if book.acked == book.agen and prefix in book.ready and book.plain:
            return
    raise AssertionError("never drew")


async def settled(*backends: LocalStorageBackend) -> None:
    """Every process has sent what it spent (each one's get_usage sends its own first)."""
    for backend in backends:
        await backend.get_usage()


class HeldSave(LocalStorageBackend):
    """Holds its next save of ``gated`` after it drew, before it lands."""

    gated = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.drawn = asyncio.Event()
        self.gate = asyncio.Event()

    async def _save(self, key: str, body: object, content_type: str, metadata: object) -> None:
        if key == self.gated:
            self.drawn.set()
            await self.gate.wait()
        await super()._save(key, body, content_type, metadata)  # type: ignore[arg-type]
