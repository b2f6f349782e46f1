"""One large transfer in a fresh interpreter: ``python -m benchmarks._child '<json spec>'``.

The child imports what its contender needs, takes that as its RSS baseline, then runs
the phases (``upload``, ``download``); each phase's peak RSS (the kernel's high-water
mark, reset per phase) is reported above the baseline, with wall and CPU time.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import s3_clients as sc
from benchmarks._common import RssSampler, proc_cpu

LOCAL = "file_storage (local)"

IMPORTS: dict[str, tuple[str, ...]] = {
    sc.LIBRARY: ("file_storage", "aiobotocore.session", "botocore.config"),
    sc.LIBRARY_OBSTORE: ("file_storage", "obstore", "obstore.store"),
    sc.RAW: ("aioboto3", "boto3.s3.transfer"),
    sc.NAIVE: ("aioboto3", "boto3.s3.transfer"),
    sc.S3FS: ("s3fs",),
    sc.OBSTORE: ("obstore", "obstore.store"),
    LOCAL: ("file_storage",),
}


class _Local(sc.Contender):
    """LocalStorageBackend's upload_file/download_file; ``bucket`` is its root folder."""

    name = LOCAL

    async def open(self) -> None:
        from file_storage import LocalStorageBackend

        self.backend = LocalStorageBackend(self.bucket)

    async def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def get(self, key: str) -> bytes:
        raise NotImplementedError

    async def count(self, prefix: str) -> int:
        raise NotImplementedError

    async def upload(self, path: Path, key: str) -> None:
        await self.backend.upload_file(path, key)

    async def download(self, key: str, path: Path) -> None:
        await self.backend.download_file(key, path)


async def _work(spec: dict[str, Any], sampler: RssSampler, baseline: int) -> dict[str, Any]:
    name = spec["contender"]
    contender = (
        _Local(spec["endpoint"], spec["bucket"])
        if name == LOCAL
        else sc.make(name, spec["endpoint"], spec["bucket"])
    )
    server = psutil.Process(spec["server_pid"]) if spec.get("server_pid") else None
    src = Path(spec["src"])
    dst = Path(spec["dst"])
    out: dict[str, Any] = {}
    await contender.open()
    try:
        for phase in spec["phases"]:
            gc.collect()
            sampler.reset()
            server0 = proc_cpu(server)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            if phase == "upload":
                await contender.upload(src, "large.bin")
            else:
                await contender.download("large.bin", dst)
            seconds = time.perf_counter() - t0
            out[phase] = {
                "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu0,
                "server_cpu_seconds": proc_cpu(server) - server0 if server else None,
                "peak_rss": sampler.peak - baseline,
            }
            if phase == "download":
                size = dst.stat().st_size
                if size != src.stat().st_size:
                    raise RuntimeError(f"downloaded {size} bytes of {src.stat().st_size}")
                dst.unlink()
    finally:
        await contender.close()
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    for module in IMPORTS[spec["contender"]]:
        importlib.import_module(module)
    gc.collect()
    sampler = RssSampler()
    baseline = sampler.rss()
    result: dict[str, Any] = {"baseline_rss": baseline}
    try:
        with sampler:
            result["phases"] = asyncio.run(_work(spec, sampler, baseline))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:200]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
