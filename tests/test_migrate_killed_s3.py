"""migrate between a local folder and S3 (moto), killed (SIGKILL, in a real process) at
each step of a large object's move (a part sent, the copy landed, verified), then run
again with delete_source: the destination ends exactly as the source was (bytes, content
type, metadata, headers), no partial object is ever visible there, and what a killed run
leaves behind is what docs/migration.md says (an S3 multipart upload in progress, a
local temp file) and never shows as an object."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, StorageBackend, migrate
from tests.s3util import SERVER, s3_backends
from tests.test_migrate_killed import KILL_ON_CALL

pytestmark = pytest.mark.s3

MIB = 2**20
PART = 5 * MIB  # S3's smallest part: a 12 MiB object is three
BIG = {f"big/{i}.bin": bytes([65 + i]) * (12 * MIB) for i in range(2)}
SMALL = {f"small/{i}.txt": f"small object {i}\n".encode() * (i + 1) for i in range(3)}
HEADERS = {"cache_control": "max-age=60", "content_disposition": "attachment"}
META = {"owner": "u1"}

RUN = KILL_ON_CALL + textwrap.dedent(
    """
    import asyncio, json, sys
    from file_storage import LocalStorageBackend, S3StorageBackend, migrate

    spec = json.loads(sys.argv[1])
    kill_on_call(spec["hook"], spec["nth"])

    def backend(side):
        if side["type"] == "local":
            return LocalStorageBackend(side["root"])
        return S3StorageBackend(side.pop("bucket"), **side["options"])

    asyncio.run(migrate(backend(spec["source"]), backend(spec["dest"]), concurrency=1,
                        delete_source=True))
    """
)

# where a run is killed: the hook's dotted name and on which of its calls (objects move
# one at a time, in key order: big/0.bin, big/1.bin, then the small ones)
TO_S3 = {
    "part-sent": ("file_storage.backends.s3._parts.Multipart.put_part", 2),
    "copy-landed": ("file_storage._migrate._check", 1),
    "verified": ("file_storage.backends.local.LocalStorageBackend._purge_one", 2),
}
FROM_S3 = {
    "mid-write": ("file_storage._migrate._update", 5),  # the local temp file half written
    "copy-landed": ("file_storage._migrate._check", 1),
    "verified": ("file_storage.backends.s3.S3StorageBackend._purge_one", 2),
}


def s3_side(endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "type": "s3",
        "bucket": bucket,
        "options": {
            "endpoint_url": endpoint,
            "access_key_id": SERVER.access_key_id,
            "secret_access_key": SERVER.secret_access_key,
            "addressing_style": "path",
            "multipart_threshold": PART,
            "multipart_chunk_size": PART,
        },
    }


async def kill_at(spec: dict[str, Any]) -> None:
    args = [sys.executable, "-c", RUN, json.dumps(spec)]
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


async def fill(source: StorageBackend) -> dict[str, bytes]:
    objects = {**BIG, **SMALL}
    for key, content in objects.items():
        await source.save(key, content, content_type="text/csv", metadata=META, **HEADERS)
    return objects


async def no_partial_object(dest: StorageBackend, objects: dict[str, bytes]) -> None:
    for key in await dest.list_files():
        assert await dest.load(key) == objects[key], key


async def rerun_ends_exact(
    source: StorageBackend, dest: StorageBackend, objects: dict[str, bytes]
) -> None:
    report = await migrate(source, dest, delete_source=True)
    assert report.failed == {}
    assert await source.list_files() == []
    assert await dest.list_files() == sorted(objects)
    for key, content in objects.items():
        assert await dest.load(key) == content, key
        info = await dest.stat(key)
        assert (info.content_type, info.metadata) == ("text/csv", META)
        assert (info.cache_control, info.content_disposition) == tuple(HEADERS.values())


def uploads(raw: Any, bucket: str) -> list[str]:
    found: list[dict[str, Any]] = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [upload["Key"] for upload in found]


@pytest.mark.parametrize("step", list(TO_S3))
async def test_local_to_s3_killed_at_any_step_then_run_again_ends_exact(
    tmp_path: Path, step: str, moto_endpoint: str, s3_bucket: str, raw: Any
) -> None:
    source = LocalStorageBackend(tmp_path / "src")
    objects = await fill(source)
    hook, nth = TO_S3[step]
    side = s3_side(moto_endpoint, s3_bucket)
    spec = {"hook": hook, "nth": nth, "source": {"type": "local", "root": str(tmp_path / "src")}}
    await kill_at({**spec, "dest": side})
    async with s3_backends(moto_endpoint, s3_bucket, **side["options"]) as make:
        dest = make()
        await no_partial_object(dest, objects)
        left = uploads(raw, s3_bucket)
        # a part sent, none completed: the upload stays (invisible, its parts billed)
        # until a lifecycle rule aborts it; a re-run cannot tell it from a live one's
        assert left == (["storage/big/0.bin"] if step == "part-sent" else [])
        await rerun_ends_exact(source, dest, objects)
        assert uploads(raw, s3_bucket) == left


@pytest.mark.parametrize("step", list(FROM_S3))
async def test_s3_to_local_killed_at_any_step_then_run_again_ends_exact(
    tmp_path: Path, step: str, moto_endpoint: str, s3_bucket: str
) -> None:
    side = s3_side(moto_endpoint, s3_bucket)
    async with s3_backends(moto_endpoint, s3_bucket, **side["options"]) as make:
        source = make()
        objects = await fill(source)
        hook, nth = FROM_S3[step]
        dest_root = tmp_path / "dst"
        spec = {"hook": hook, "nth": nth, "dest": {"type": "local", "root": str(dest_root)}}
        await kill_at({**spec, "source": side})
        dest = LocalStorageBackend(dest_root)
        await no_partial_object(dest, objects)
        await rerun_ends_exact(source, dest, objects)
        # a write killed mid-way leaves its temp file (never listed, counted by a quota):
        # the re-run cannot tell it from a live writer's; once older than
        # temp_max_age_seconds, refresh_usage (or a quota scan) removes it
        assert bool(temp_files(dest_root)) == (step == "mid-write")
        await LocalStorageBackend(dest_root, temp_max_age_seconds=0.001).refresh_usage()
        assert temp_files(dest_root) == []


def temp_files(root: Path) -> list[Path]:
    """The files under ``root`` that are neither objects nor the backend's sidecars."""
    sidecars = root / ".file_storage\\meta"
    return [
        path
        for path in root.rglob("*")
        if path.is_file()
        and sidecars not in path.parents
        and path.relative_to(root).as_posix() not in {**BIG, **SMALL}
    ]
