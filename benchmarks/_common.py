"""What every workload shares: scales, result rows, meters and the moto server process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

# the local moto server takes any credentials (these are fake); a server given with
# --endpoint (a throwaway Ceph RGW, say) gets its test user's from the environment
KEY_ID = os.environ.get("BENCH_S3_ACCESS_KEY_ID") or "AKIAFAKEFAKEFAKEFAKE"
SECRET = (
    os.environ.get("BENCH_S3_SECRET_ACCESS_KEY") or "fake-secret-key-for-the-benchmark-moto-server"
)
REGION = "us-east-1"
KIB = 1024
MIB = 1024 * 1024
SMALL = 4 * KIB


@dataclass(frozen=True)
class Scale:
    """How much work each workload does; ``--quick`` scales everything down."""

    name: str
    small_ops: int  # PUTs/GETs per contender
    naive_ops: int  # the per-call-client pattern is ~50x slower: fewer ops, same rates
    warmup: int  # ops per contender not counted
    rounds: int  # contenders alternate this many times
    list_keys: int
    list_reps: int
    s3_large: int  # bytes of the S3 upload/download
    large_rounds: int
    rss_size: int  # bytes of the upload_file + download_file peak-RSS check
    local_files: int
    local_large: int
    local_rounds: int  # local large files: best of this many
    quota_counts: tuple[int, ...]  # memory backend
    quota_local_counts: tuple[int, ...]
    quota_ops: int
    import_runs: int
    tuning_ops: int


FULL = Scale(
    name="full",
    small_ops=1000,
    naive_ops=100,
    warmup=50,
    rounds=4,
    list_keys=10_000,
    list_reps=3,
    s3_large=256 * MIB,
    large_rounds=2,
    rss_size=1024 * MIB,
    local_files=2000,
    local_large=1024 * MIB,
    local_rounds=3,
    quota_counts=(0, 10_000, 100_000),
    quota_local_counts=(0, 10_000),
    quota_ops=4000,
    import_runs=10,
    tuning_ops=2000,  # the knobs move CPU/op by ~10%: more ops to see it through noise
)

QUICK = Scale(
    name="quick",
    small_ops=200,
    naive_ops=20,
    warmup=20,
    rounds=2,
    list_keys=1000,
    list_reps=2,
    s3_large=32 * MIB,
    large_rounds=1,
    rss_size=128 * MIB,
    local_files=500,
    local_large=256 * MIB,  # 64 MiB takes ~20 ms: too short to time
    local_rounds=2,
    quota_counts=(0, 1000, 10_000),
    quota_local_counts=(0, 1000),
    quota_ops=1000,
    import_runs=5,
    tuning_ops=200,
)


@dataclass
class Row:
    """One contender on one workload; totals over all its rounds."""

    section: str
    workload: str
    contender: str
    ops: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # client process CPU (time.process_time), all threads
    server_cpu_seconds: float | None = None  # moto process CPU over the same spans
    nbytes: int = 0
    peak_rss: int | None = None  # bytes above the baseline after imports
    error: str | None = None  # "n/a (reason)" instead of numbers
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_op_us(self) -> float:
        return self.cpu_seconds / self.ops * 1e6 if self.ops else 0.0

    @property
    def server_pct(self) -> float | None:
        if self.server_cpu_seconds is None or not self.seconds:
            return None
        return 100 * self.server_cpu_seconds / self.seconds

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            ops_per_s=self.ops_per_s,
            mb_per_s=self.mb_per_s,
            cpu_per_op_us=self.cpu_per_op_us,
            server_cpu_pct=self.server_pct,
        )
        return out


Procs = psutil.Process | list[psutil.Process] | None


def proc_cpu(proc: Procs) -> float:
    """CPU seconds (user + system) of ``proc`` (or of each of a list) and their children,
    0 when gone or absent."""
    if proc is None:
        return 0.0
    if isinstance(proc, list):
        return sum(proc_cpu(one) for one in proc)
    try:
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            total += sum(child.cpu_times()[:2])
    except psutil.Error:
        return 0.0
    return total


class Meter:
    """Adds wall time, client CPU and server CPU of each ``with`` block to a row."""

    def __init__(self, row: Row, server: Procs) -> None:
        self.row = row
        self.server = server

    def __enter__(self) -> Meter:
        self._server0 = proc_cpu(self.server)
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.row.seconds += time.perf_counter() - self._t0
        self.row.cpu_seconds += time.process_time() - self._cpu0
        if self.server is not None:
            spent = proc_cpu(self.server) - self._server0
            self.row.server_cpu_seconds = (self.row.server_cpu_seconds or 0.0) + spent


async def drive(
    op: Callable[[int], Awaitable[object]], start: int, count: int, concurrency: int
) -> None:
    """Run ``op(i)`` for ``i`` in ``[start, start + count)``, ``concurrency`` at a time."""
    indexes = iter(range(start, start + count))

    async def worker() -> None:
        for i in indexes:  # shared iterator: each index runs once
            await op(i)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))


def rotations(items: list[Any], rounds: int) -> Iterator[list[Any]]:
    """The contenders in a different order each round, so none always goes first."""
    for r in range(rounds):
        k = r % len(items) if items else 0
        yield items[k:] + items[:k]


def split(total: int, parts: int) -> list[int]:
    """``total`` ops as ``parts`` near-equal round sizes."""
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def na(exc: BaseException) -> str:
    """A one-line ``n/a (reason)`` for a contender that could not run."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"n/a ({reason[:120]})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """A moto S3 server in its own process (its CPU measurable, no shared GIL)."""

    label = "moto server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""
        self.ps: Procs = None

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._moto"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"moto server did not start: {line!r}")
        self.endpoint = line
        self.ps = psutil.Process(self.proc.pid)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the child exits when its stdin closes
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def sync_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=Config(s3={"addressing_style": "path"}),
        )

    def bucket(self, tag: str) -> str:
        """A fresh, empty bucket."""
        name = f"bench-{tag}-{uuid.uuid4().hex[:10]}".lower().replace("_", "-")
        client = self.sync_client()
        client.create_bucket(Bucket=name)
        client.close()
        return name

    def drop(self, bucket: str) -> None:
        """Empty and delete a bucket so moto's memory stays flat across workloads."""
        client = self.sync_client()
        try:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket):
                keys = [{"Key": item["Key"]} for item in page.get("Contents") or ()]
                if keys:
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            client.delete_bucket(Bucket=bucket)
        except Exception as exc:  # best effort: a leftover bucket only costs moto memory
            print(f"  (could not drop bucket {bucket}: {type(exc).__name__})", file=sys.stderr)
        finally:
            client.close()


class ExternalServer(MotoServer):
    """An S3 server already running (``--endpoint``): a throwaway Ceph RGW from
    ``scripts/ceph-rgw.sh``, say. ``pids``: its processes, whose CPU is the server CPU
    column (all of them: for Ceph the gateway, the OSD and the monitor). Buckets are made
    and dropped the same way; keys come from ``BENCH_S3_ACCESS_KEY_ID`` and
    ``BENCH_S3_SECRET_ACCESS_KEY``."""

    def __init__(self, endpoint: str, label: str, pids: list[int]) -> None:
        super().__init__()
        self.endpoint = endpoint.rstrip("/")
        self.label = label
        self.pids = pids

    def start(self) -> ExternalServer:
        self.ps = [psutil.Process(pid) for pid in self.pids] or None
        return self

    def stop(self) -> None:
        return None  # not ours to stop


def _status_kib(field: str) -> int | None:
    """A ``Vm*`` line of /proc/self/status in KiB (Linux), else ``None``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Peak resident memory of this process over a span.

    On Linux the kernel's own high-water mark (VmHWM, reset through
    /proc/self/clear_refs) is exact; a thread sampling RSS every few milliseconds
    backs it up elsewhere. (``ru_maxrss`` is no use in a child: Linux carries the
    parent's peak across fork and exec.)
    """

    def __init__(self, interval: float = 0.005) -> None:
        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sampled = self.rss()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sampled = max(self._sampled, self.rss())

    @property
    def peak(self) -> int:
        hwm = _status_kib("VmHWM")
        return max(self._sampled, self.rss(), 0 if hwm is None else hwm * 1024)

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
                clear.write("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
        except OSError:
            pass
        self._sampled = self.rss()

    def __enter__(self) -> RssSampler:
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the final Markdown."""
    print(message, file=sys.stderr, flush=True)
