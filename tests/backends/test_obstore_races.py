"""Conditional writes on GCS and Azure raced by real processes on the same keys: for each
key exactly one process's write lands, every other one gets PreconditionFailedError, and
the key holds the winner's bytes (never a silent overwrite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from file_storage import AzureStorageBackend, GCSStorageBackend, StorageBackend

WORKER = Path(__file__).with_name("race_worker.py")
PROCESSES = 3
KEYS = 12


def _config(backend: StorageBackend) -> dict[str, Any]:
    if isinstance(backend, GCSStorageBackend):
        account = backend._service_account
        assert account is not None
        return {
            "kind": "gcs",
            "bucket": backend._bucket,
            "prefix": "storage",
            "service_account": account.get_secret_value(),
            "endpoint_url": backend._endpoint_url,
        }
    assert isinstance(backend, AzureStorageBackend)
    assert backend._access_key is not None
    return {
        "kind": "azure",
        "container": backend._container,
        "account": backend._account,
        "prefix": "storage",
        "access_key": backend._access_key.get_secret_value(),
        "endpoint_url": backend._endpoint_url,
    }


def _race(backend: StorageBackend, etags: dict[str, str | None]) -> list[dict[str, str]]:
    root = str(Path(__file__).resolve().parents[2])
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(_config(backend)), f"p{n}", json.dumps(etags)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        for n in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # all start together
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


async def _check_one_winner(
    backend: StorageBackend, results: list[dict[str, str]], keys: list[str]
) -> None:
    for key in keys:
        winners = [n for n, got in enumerate(results) if got[key] == "saved"]
        assert len(winners) == 1, (key, results)
        assert await backend.load(key) == f"p{winners[0]}".encode() * 100


async def test_create_only_writes_raced_by_processes_land_once(cloud: StorageBackend) -> None:
    keys = [f"race/new-{n}" for n in range(KEYS)]
    results = _race(cloud, dict.fromkeys(keys))
    await _check_one_winner(cloud, results, keys)


async def test_if_match_writes_raced_by_processes_land_once(cloud: StorageBackend) -> None:
    etags: dict[str, str | None] = {}
    for n in range(KEYS):
        key = f"race/old-{n}"
        await cloud.save(key, b"base")
        etags[key] = (await cloud.stat(key)).etag
    results = _race(cloud, etags)
    await _check_one_winner(cloud, results, list(etags))
