"""The S3 backend in a process forked after its parent used it (``multiprocessing`` with
``fork``, Celery's prefork pool, gunicorn ``--preload``): the child has none of the
parent's threads, and its event loops are not the parent's."""

from __future__ import annotations

import asyncio
import threading

import pytest

from file_storage import S3StorageBackend
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.forks import DEADLINE, forked, in_child

pytestmark = pytest.mark.s3


def s3(moto_endpoint: str, bucket: str) -> S3StorageBackend:
    return S3StorageBackend(
        bucket,
        endpoint_url=moto_endpoint,
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        addressing_style="path",
    )


async def use(backend: S3StorageBackend, key: str) -> list[str]:
    await backend.save(key, key.encode())
    assert await backend.load(key) == key.encode()
    return sorted(await backend.list_files())


def test_a_child_forked_after_its_parent_used_s3_uses_it_too(
    moto_endpoint: str, s3_bucket: str
) -> None:
    backend = s3(moto_endpoint, s3_bucket)
    assert asyncio.run(use(backend, "parent")) == ["parent"]
    child = forked(in_child(lambda: asyncio.run(use(backend, "child"))))
    assert child() == ["child", "parent"]
    assert asyncio.run(use(backend, "again")) == ["again", "child", "parent"]
    asyncio.run(backend.aclose())


def test_a_child_forked_while_a_parent_loop_holds_clients_opens_its_own(
    moto_endpoint: str, s3_bucket: str
) -> None:
    # a server's loop in a thread of the parent keeps its clients open across the fork
    backend = s3(moto_endpoint, s3_bucket)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        run = asyncio.run_coroutine_threadsafe(use(backend, "parent"), loop)
        assert run.result(DEADLINE) == ["parent"]
        child = forked(in_child(lambda: asyncio.run(use(backend, "child"))))
        assert child() == ["child", "parent"]
        run = asyncio.run_coroutine_threadsafe(use(backend, "again"), loop)
        assert run.result(DEADLINE) == ["again", "child", "parent"]
        asyncio.run_coroutine_threadsafe(backend.aclose(), loop).result(DEADLINE)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_a_child_forked_while_a_parent_thread_opens_a_loops_clients_uses_s3(
    moto_endpoint: str, s3_bucket: str
) -> None:
    # a thread of the parent, caught while it registers its loop's clients, holds the
    # lock of the per-loop map across the fork: the child's copy would stay held for ever
    backend = s3(moto_endpoint, s3_bucket)
    assert asyncio.run(use(backend, "parent")) == ["parent"]
    holding, done = threading.Event(), threading.Event()

    def register() -> None:
        with backend._loops_lock:
            holding.set()
            done.wait(DEADLINE)

    thread = threading.Thread(target=register)
    thread.start()
    holding.wait(DEADLINE)
    try:
        child = forked(in_child(lambda: asyncio.run(use(backend, "child"))))
    finally:
        done.set()
        thread.join()
    assert child() == ["child", "parent"]
    assert asyncio.run(use(backend, "again")) == ["again", "child", "parent"]
    asyncio.run(backend.aclose())


def test_a_child_running_the_loop_it_inherited_opens_its_own_clients(
    moto_endpoint: str, s3_bucket: str
) -> None:
    # sync code calling loop.run_until_complete on one loop made before the fork: the
    # child's loop object is the parent's, whose clients' connections the parent keeps
    backend = s3(moto_endpoint, s3_bucket)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(use(backend, "parent")) == ["parent"]
        parents = backend._loops[loop].s3

        def child_job() -> bool:
            loop.run_until_complete(use(backend, "child"))
            return backend._loops[loop].s3 is parents

        assert forked(in_child(child_job))() is False
        assert loop.run_until_complete(use(backend, "again")) == ["again", "child", "parent"]
        loop.run_until_complete(backend.aclose())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
