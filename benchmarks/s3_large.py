"""Large transfers: throughput and client peak RSS, each phase in a fresh subprocess.

``run_large``: every S3 contender uploads then downloads one file (256 MiB; 32 MiB
quick), on a fresh bucket, in ``large_rounds`` rotating rounds. ``run_rss``: the
large-object issue's check, ``upload_file`` + ``download_file`` of 1 GiB (128 MiB
quick) with file_storage on S3 and on local disk, peak RSS above the baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import s3_clients as sc
from benchmarks._child import LOCAL
from benchmarks._common import MIB, MotoServer, Row, Scale, log, rotations

SECTION = "S3 large objects (moto server)"
RSS_SECTION = "upload_file + download_file peak RSS"


def make_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes: one random MiB repeated (moto and disks do not compress)."""
    if path.exists() and path.stat().st_size == size:
        return path
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for offset in range(0, size, MIB):
            out.write(block[: min(MIB, size - offset)])
    return path


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec in a fresh interpreter; errors come back as ``{"error": ...}``."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child exited {proc.returncode}: {tail}"[:200]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_phases(spec: dict[str, Any]) -> dict[str, Any]:
    """Upload in one fresh interpreter, download in another: each phase its own baseline.

    (In one process the download's peak would include what the upload left in the heap.)
    """
    merged: dict[str, Any] = {"phases": {}, "baseline_rss": {}}
    for phase in ("upload", "download"):
        result = run_child({**spec, "phases": [phase]})
        if "error" in result:
            return result
        merged["phases"][phase] = result["phases"][phase]
        merged["baseline_rss"][phase] = result["baseline_rss"]
    return merged


def _add(row: Row, result: dict[str, Any], phase: str, size: int) -> None:
    if "error" in result:
        row.error = f"n/a ({result['error']})"
        return
    data = result["phases"][phase]
    row.ops += 1
    row.nbytes += size
    row.seconds += data["seconds"]
    row.cpu_seconds += data["cpu_seconds"]
    if data["server_cpu_seconds"] is not None:
        row.server_cpu_seconds = (row.server_cpu_seconds or 0.0) + data["server_cpu_seconds"]
    peak = int(data["peak_rss"])
    row.peak_rss = peak if row.peak_rss is None else max(row.peak_rss, peak)
    row.extra["baseline_rss_mib"] = result["baseline_rss"][phase] / MIB


def run_large(server: MotoServer, scale: Scale, workdir: Path) -> list[Row]:
    size = scale.s3_large
    src = make_file(workdir / f"src-{size // MIB}M.bin", size)
    label = f"{size // MIB} MiB"
    up = {n: Row(SECTION, f"upload {label}", n) for n in sc.CONTENDERS}
    down = {n: Row(SECTION, f"download {label}", n) for n in sc.CONTENDERS}
    for r, order in enumerate(rotations(list(sc.CONTENDERS), scale.large_rounds)):
        for name in order:
            if up[name].error is not None:
                continue
            log(f"  {label} round {r + 1}: {name}")
            bucket = server.bucket("large")
            spec = {
                "contender": name,
                "endpoint": server.endpoint,
                "bucket": bucket,
                "server_pid": server.proc.pid if server.proc else None,
                "src": str(src),
                "dst": str(workdir / "dst-large.bin"),
            }
            try:
                result = run_phases(spec)
            finally:
                server.drop(bucket)
            _add(up[name], result, "upload", size)
            _add(down[name], result, "download", size)
    return [*up.values(), *down.values()]


def run_rss(server: MotoServer, scale: Scale, workdir: Path) -> list[Row]:
    size = scale.rss_size
    src = make_file(workdir / f"src-{size // MIB}M.bin", size)
    label = f"{size // MIB} MiB" if size < 1024 * MIB else f"{size // (1024 * MIB)} GiB"
    rows: list[Row] = []
    for name, where in ((sc.LIBRARY, "S3"), (LOCAL, "local")):
        log(f"  RSS check {label}: file_storage on {where}")
        bucket = server.bucket("rss") if where == "S3" else str(workdir / "rss-root")
        spec = {
            "contender": name,
            "endpoint": server.endpoint,
            "bucket": bucket,
            "server_pid": server.proc.pid if server.proc and where == "S3" else None,
            "src": str(src),
            "dst": str(workdir / "dst-rss.bin"),
        }
        try:
            result = run_phases(spec)
        finally:
            if where == "S3":
                server.drop(bucket)
            else:
                _remove_tree(Path(bucket))
        for phase in ("upload", "download"):
            row = Row(RSS_SECTION, f"{phase}_file {label}, {where}", f"file_storage ({where})")
            _add(row, result, phase, size)
            rows.append(row)
    return rows


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
