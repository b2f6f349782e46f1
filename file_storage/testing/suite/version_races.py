"""Versioning while another task writes or deletes the same key: what purge_versions and
restore_version leave. A hook (``_purge_hooks``) runs the other task between the listing a
purge makes and its deletes (the window a slow listing of many versions leaves open)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from file_storage import StorageBackend
from file_storage.testing.suite._purge_hooks import (
    delete_suspended,
    null_then_kept,
    purge_racing,
    write_suspended_then_versioned,
)


@pytest.mark.backend_needs("versions", "suspended_versioning", "exact_version_purge")
@pytest.mark.parametrize("quota", [False, True], ids=["plain", "quota"])
async def test_purge_keep_1_never_undoes_a_delete_landing_while_it_runs(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: bool
) -> None:
    if quota:  # the purge holds the key: the delete waits for it, and both are counted
        versioned.set_quota("", 10**6)
    await null_then_kept(versioned)

    await purge_racing(versioned, monkeypatch, delete_suspended)
    assert not await versioned.exists("k.txt")
    listed = [(v.version_id == "null", v.size) for v in await versioned.list_versions("k.txt")]
    assert listed == [(False, 4)]  # "kept", restorable
    if quota:
        assert (await versioned.get_usage()).used == 4


@pytest.mark.backend_needs("versions", "suspended_versioning", "exact_version_purge")
@pytest.mark.parametrize("quota", [False, True], ids=["plain", "quota"])
async def test_purge_keep_1_never_purges_a_write_landing_while_it_runs_then_overwritten(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: bool
) -> None:
    if quota:  # the purge holds the key: the writes wait for it, and all are counted
        versioned.set_quota("", 10**6)
    await null_then_kept(versioned)

    await purge_racing(versioned, monkeypatch, write_suspended_then_versioned)
    assert await versioned.load("k.txt") == b"newest"
    # both writes kept; the "null" version listed was replaced already, nothing purged
    listed = [(v.version_id == "null", v.size) for v in await versioned.list_versions("k.txt")]
    assert listed == [(False, 6), (True, 25), (False, 4)]
    if quota:
        assert (await versioned.get_usage()).used == 35


async def _stored(backend: StorageBackend, keys: list[str]) -> int:
    return sum([v.size for key in keys for v in await backend.list_versions(key)])


async def _race_under_a_quota(versioned: StorageBackend, *, suspend: bool) -> None:
    """Writes, deletes, restores and purges of two keys from concurrent tasks, versioning
    switched as they run when ``suspend``; usage is then what the versions listed hold."""
    keys = ["r/a.txt", "r/b.txt"]
    for key in keys:
        await versioned.save(key, b"0")
    for i in range(12):  # bounded rounds, every task of a round started together
        steps: list[Awaitable[object]] = []
        if suspend and i % 3 == 1:
            steps.append(versioned.set_versioning(i % 2 == 0))  # while the others run
        for n, key in enumerate(keys):
            listed = await versioned.list_versions(key)  # none after a suspended delete
            steps += [
                versioned.save(key, b"x" * (i + n + 1)),
                versioned.purge_versions(key, keep=1 + i % 2),
            ]
            if listed:
                steps.append(versioned.restore_version(key, listed[-1].version_id))
            if i % 4 == n:
                steps.append(versioned.delete(key))
        outcomes = await asyncio.gather(*steps, return_exceptions=True)
        for outcome in outcomes:  # a restore of a version purged meanwhile: not found
            if isinstance(outcome, BaseException) and not isinstance(outcome, FileNotFoundError):
                raise outcome
        assert (await versioned.get_usage()).used == await _stored(versioned, keys)
    await versioned.refresh_usage()
    assert (await versioned.get_usage()).used == await _stored(versioned, keys)


@pytest.mark.backend_needs("versions")
async def test_usage_stays_what_the_versions_hold_under_racing_purges_and_writes(
    versioned: StorageBackend,
) -> None:
    versioned.set_quota("", 10**6)
    await _race_under_a_quota(versioned, suspend=False)


@pytest.mark.backend_needs("versions", "suspended_versioning")
async def test_usage_stays_what_the_versions_hold_while_versioning_switches(
    versioned: StorageBackend,
) -> None:
    versioned.set_quota("", 10**6)
    await _race_under_a_quota(versioned, suspend=True)
