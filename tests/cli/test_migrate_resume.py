"""A LOCAL->S3 migration killed halfway (SIGTERM, then SIGKILL) and re-run completes.

Every object ends at the destination byte for byte, and none is written twice: the bucket
keeps versions, so each successful PUT the server took is one version of its key.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from tests.cli.helpers import cli, cli_env, command, s3_settings, write_env_file

COUNT = 2000
WAIT = 120.0  # seconds any one step may take before the test fails


def _lines(stream: IO[bytes]) -> tuple[queue.Queue[bytes], threading.Thread]:
    """The lines of ``stream`` as they come, read by a thread (b"" at the end)."""
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(b"")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return lines, reader


def run_until(args: list[str], env: dict[str, str], copies: int, sig: signal.Signals) -> int:
    """Start a migration, let it copy ``copies`` objects (its -v lines say so), signal it."""
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    lines, reader = _lines(process.stderr)
    seen = 0
    try:
        while seen < copies:
            line = lines.get(timeout=WAIT)
            assert line, "the migration ended before it was interrupted"
            seen += line.startswith(b"copied ")
        process.send_signal(sig)
        return process.wait(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(WAIT)  # the pipe ends with the process
        process.stderr.close()


def versions(raw: Any, bucket: str) -> dict[str, int]:
    """How many versions (successful PUTs) each key has; delete markers fail the test."""
    counts: dict[str, int] = {}
    for page in raw.get_paginator("list_object_versions").paginate(Bucket=bucket):
        assert not page.get("DeleteMarkers")
        for version in page.get("Versions", []):
            counts[version["Key"]] = counts.get(version["Key"], 0) + 1
    return counts


@pytest.mark.s3
def test_killed_migration_resumes_without_copying_twice(
    tmp_path: Path, moto_endpoint: str, s3_bucket: str, raw: Any
) -> None:
    root = tmp_path / "storage"
    rng = random.Random(15)
    objects: dict[str, bytes] = {}
    for i in range(COUNT):
        key = f"users/u{i % 7}/file-{i:04}.bin"
        objects[key] = rng.randbytes(rng.randrange(1, 3000))
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(objects[key])
    raw.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    to_env = write_env_file(tmp_path / "s3.env", s3_settings(moto_endpoint, s3_bucket))
    env = cli_env(STORAGE_TYPE="LOCAL", STORAGE_LOCAL_PATH=str(root))
    args = command("migrate", "--to-env", to_env, "--concurrency", "8", "-v")

    assert run_until(args, env, 400, signal.SIGTERM) == 1  # stopped cleanly: exit 1
    assert run_until(args, env, 400, signal.SIGKILL) == -signal.SIGKILL
    landed = len(versions(raw, s3_bucket))
    assert 800 <= landed < COUNT

    final = cli("migrate", "--to-env", to_env, "--json", env=env)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    assert report["failed"] == {}
    assert report["skipped"] == landed
    assert report["copied"] == COUNT - landed

    stored = versions(raw, s3_bucket)
    assert stored == {f"storage/{key}": 1 for key in objects}  # each written exactly once
    for key, content in objects.items():
        body = raw.get_object(Bucket=s3_bucket, Key=f"storage/{key}")["Body"]
        assert body.read() == content
