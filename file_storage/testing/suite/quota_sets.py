"""Quotas set, removed or set again while operations are in flight stay exact at rest."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend, StorageQuotaExceededError
from file_storage.testing.suite.quota import assert_ledger_exact, paused_save


async def test_quota_set_during_a_write_counts_it(backend: StorageBackend) -> None:
    write, gate = await paused_save(backend, "k", b"x" * 10, b"y" * 5)
    backend.set_quota("", 100)
    assert (await backend.get_usage()).used == 0  # listed before the write landed
    gate.set()
    await write
    await assert_ledger_exact(backend, 100)


async def test_quota_removed_and_set_again_during_a_write_counts_it(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 100)
    write, gate = await paused_save(backend, "k", b"x" * 10, b"y" * 5)
    backend.set_quota("", None)
    backend.set_quota("", 100)
    await backend.get_usage()  # listed before the write landed
    gate.set()
    await write
    await assert_ledger_exact(backend, 100)


async def test_outer_quota_set_during_a_write_under_an_inner_one_counts_it(
    backend: StorageBackend,
) -> None:
    backend.set_quota("users/u1/", 100)
    write, gate = await paused_save(backend, "users/u1/k", b"x" * 10, b"y" * 5)
    backend.set_quota("", 1000)
    assert (await backend.get_usage()).used == 0  # listed before the write landed
    gate.set()
    await write
    await assert_ledger_exact(backend, 1000)
    assert (await backend.get_usage("users/u1/")).used == 15


async def test_limit_lowered_during_a_write_refuses_what_no_longer_fits(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 100)
    await backend.save("a", b"a" * 30)
    write, gate = await paused_save(backend, "k", b"x" * 50, b"y" * 40)
    backend.set_quota("", 60)  # the write holds 50 of it: 80 in all, over already
    gate.set()
    with pytest.raises(StorageQuotaExceededError) as info:
        await write
    assert (info.value.limit, info.value.used) == (60, 30)
    await assert_ledger_exact(backend, 100)
    assert await backend.list_files() == ["a"]
