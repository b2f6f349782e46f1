"""``python -m benchmarks [--quick] [--only NAME,...]``: run the suite, write the results.

Starts a moto S3 server in its own process on 127.0.0.1 and works in a temp folder;
prints the Markdown report on stdout (progress on stderr) and writes it to
``benchmarks/results/latest.md``, with every number in ``latest.json``, and the SVG
charts of docs/benchmarks.md to ``docs/img/benchmarks/`` (with ``--out DIR``: to
``DIR/plots``, leaving the docs untouched).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    local,
    migrate,
    pages,
    plots,
    quota,
    quota_redis,
    report,
    s3_large,
    s3_small,
)
from benchmarks._common import FULL, QUICK, ExternalServer, MotoServer, Row, Scale, log

RESULTS = Path(__file__).parent / "results"

Section = Callable[[MotoServer, Scale, Path], list[Row]]

SECTIONS: dict[str, Section] = {
    "s3-small": lambda m, s, d: asyncio.run(s3_small.run_small(m, s)),
    "s3-transports": lambda m, s, d: asyncio.run(s3_small.run_transports(m, s)),
    "s3-list": lambda m, s, d: asyncio.run(s3_small.run_listing(m, s)),
    "s3-tuning": lambda m, s, d: asyncio.run(s3_small.run_tuning(m, s)),
    "s3-large": s3_large.run_large,
    "rss": s3_large.run_rss,
    "local-small": lambda m, s, d: asyncio.run(local.run_small(s, d)),
    "local-large": lambda m, s, d: asyncio.run(local.run_large(s, d)),
    "quota": lambda m, s, d: asyncio.run(quota.run_quota(s, d)),
    "quota-redis": quota_redis.run_shared_quota,
    "import": lambda m, s, d: quota.run_import(s),
    "migrate": migrate.run_migrate,
    "pages": lambda m, s, d: asyncio.run(pages.run_pages(m, s, d)),
}


def _scrub_env() -> None:
    """Use only the moto server's fake credentials: no AWS profile, no metadata service."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a minute, smaller counts")
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.md/json go")
    parser.add_argument(
        "--endpoint",
        help="an S3 server already running instead of moto (keys from BENCH_S3_ACCESS_KEY_ID "
        "and BENCH_S3_SECRET_ACCESS_KEY), e.g. a Ceph RGW from scripts/ceph-rgw.sh",
    )
    parser.add_argument("--server-name", default="S3 server", help="its name in the tables")
    parser.add_argument(
        "--server-pids", default="", help="comma-separated pids whose CPU is the server's"
    )
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    chosen = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    _scrub_env()
    started = time.perf_counter()
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="file_storage-bench-"))
    if args.endpoint:
        pids = [int(pid) for pid in args.server_pids.split(",") if pid.strip()]
        server: MotoServer = ExternalServer(args.endpoint, args.server_name, pids).start()
    else:
        server = MotoServer().start()
    log(f"{server.label} at {server.endpoint}")
    try:
        for name in chosen:
            log(f"[{name}]")
            rows.extend(SECTIONS[name](server, scale, workdir))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - started
    env = report.environment()
    text = report.render(rows, env, scale.name, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text, encoding="utf-8")
    payload = {
        "scale": scale.name,
        "seconds": seconds,
        "environment": env,
        "targets": [vars(t) for t in report.targets(rows)],
        "rows": [row.as_dict() for row in rows],
    }
    (args.out / "latest.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    charts = plots.DOCS_IMAGES if args.out == RESULTS else args.out / "plots"
    drawn = plots.write_plots([row.as_dict() for row in rows], charts)
    sys.stdout.write(text)
    log(f"wrote {args.out / 'latest.md'}, latest.json and {len(drawn)} charts in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
