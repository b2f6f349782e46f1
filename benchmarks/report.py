"""Markdown tables, the targets with met/missed, and the machine and versions."""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import psutil

from benchmarks import local, migrate, pages, quota, quota_redis, s3_large, s3_small
from benchmarks import s3_clients as sc
from benchmarks._common import MIB, Row

PACKAGES = ("file_storage", "aioboto3", "aiobotocore", "botocore", "moto", "s3fs", "obstore")


def _commit() -> str:
    """The checkout measured: short commit, ``+dirty`` when files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "file_storage"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def environment() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} x {model}",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    env["commit"] = _commit()
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    return env


def _find(rows: list[Row], section: str, workload: str, contender: str) -> Row | None:
    for row in rows:
        if (row.section, row.workload, row.contender) == (section, workload, contender):
            return row
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def _f(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _table(head: list[str], lines: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return [*out, ""]


def _workloads(rows: list[Row], section: str) -> list[str]:
    return list(dict.fromkeys(r.workload for r in rows if r.section == section))


def _ops_table(rows: list[Row], section: str, base: str, unit: str = "ops/s") -> list[str]:
    """One line per contender and workload: rate, client CPU/op, moto CPU, ratios to base."""
    mine = [r for r in rows if r.section == section]
    server = any(r.server_cpu_seconds is not None for r in mine)
    head = ["workload", "contender", unit, "client CPU/op (µs)"]
    head += ["moto CPU %" if "moto" in section else "server CPU %"] if server else []
    head += [f"{unit} ÷ {base}", f"CPU/op ÷ {base}"]
    lines = []
    for workload in _workloads(rows, section):
        ref = _find(rows, section, workload, base)
        good = ref if ref is not None and not ref.error and ref.ops else None
        for row in (r for r in mine if r.workload == workload):
            if row.error:
                lines.append([workload, row.contender, row.error] + [""] * (len(head) - 3))
                continue
            cpu = row.cpu_per_op_us
            line = [workload, row.contender, f"{row.ops_per_s:,.0f}"]
            line.append(f"{cpu:,.1f}" if cpu < 100 else f"{cpu:,.0f}")
            line += [_f(row.server_pct, ".0f")] if server else []
            line.append(_f(_ratio(row.ops_per_s, good.ops_per_s) if good else None))
            line.append(_f(_ratio(cpu, good.cpu_per_op_us) if good else None))
            lines.append(line)
    return _table(head, lines)


def _bytes_table(rows: list[Row], section: str, base: str | None, rss: bool) -> list[str]:
    head = ["workload", "contender", "MB/s", "client CPU (s)"]
    head += ["peak RSS above baseline (MiB)"] if rss else []
    head += ["moto CPU %"] if section != local.LARGE_SECTION else []
    head += [f"MB/s ÷ {base}"] if base else []
    lines = []
    for workload in _workloads(rows, section):
        ref = _find(rows, section, workload, base) if base else None
        for row in (r for r in rows if r.section == section and r.workload == workload):
            if row.error:
                lines.append([workload, row.contender, row.error] + [""] * (len(head) - 3))
                continue
            line = [workload, row.contender, f"{row.mb_per_s:,.0f}"]
            line.append(f"{row.cpu_seconds / max(row.ops, 1):.2f}")
            if rss:
                line.append(_f(None if row.peak_rss is None else row.peak_rss / MIB, ".0f"))
            if section != local.LARGE_SECTION:
                line.append(_f(row.server_pct, ".0f"))
            if base:
                ok = ref is not None and not ref.error
                line.append(_f(_ratio(row.mb_per_s, ref.mb_per_s) if ok and ref else None))
            lines.append(line)
    return _table(head, lines)


def _quota_table(rows: list[Row]) -> list[str]:
    head = ["backend, objects", "no quota (µs/save)", "quota (µs/save)", "ratio", "first save"]
    lines = []
    for workload in _workloads(rows, quota.SECTION):
        plain = _find(rows, quota.SECTION, workload, "no quota")
        withq = _find(rows, quota.SECTION, workload, "max_size_bytes set")
        if plain is None or withq is None:
            continue
        a, b = plain.seconds / plain.ops * 1e6, withq.seconds / withq.ops * 1e6
        scan = withq.extra.get("first_save_scan_s", 0.0)
        lines.append([workload, f"{a:,.1f}", f"{b:,.1f}", f"{b / a:.2f}", f"{scan * 1e3:,.1f} ms"])
    return _table(head, lines)


@dataclass
class Target:
    name: str
    measured: str
    met: bool | None  # None: could not be measured


def _check(
    rows: list[Row],
    section: str,
    pairs: list[tuple[str, str, str]],
    value: Callable[[Row, Row], float],
    ok: Callable[[float], bool],
    fmt: str = "{:.2f}",
) -> tuple[str, bool | None]:
    """Evaluate ``value(lib_row, base_row)`` per (workload, lib, base); met when all pass."""
    parts, verdicts = [], []
    for workload, lib, base in pairs:
        a, b = _find(rows, section, workload, lib), _find(rows, section, workload, base)
        if a is None or b is None or a.error or b.error or not a.ops or not b.ops:
            parts.append(f"{workload}: n/a")
            continue
        v = value(a, b)
        verdicts.append(ok(v))
        parts.append(f"{workload}: {fmt.format(v)}")
    met = all(verdicts) if verdicts and len(verdicts) == len(pairs) else None
    return "; ".join(parts), met


def _ops(a: Row, b: Row) -> float:
    return a.ops_per_s / b.ops_per_s


def _cpu(a: Row, b: Row) -> float:
    return a.cpu_per_op_us / b.cpu_per_op_us


def _mbs(a: Row, b: Row) -> float:
    return a.mb_per_s / b.mb_per_s


def _rss_mib(a: Row, b: Row) -> float:
    return (a.peak_rss or 0) / MIB


def targets(rows: list[Row]) -> list[Target]:
    """The issue's targets, each evaluated on every workload it covers."""
    lib, raw, naive = sc.LIBRARY, sc.RAW, sc.NAIVE
    ob = sc.LIBRARY_OBSTORE
    small = _workloads(rows, s3_small.SECTION)
    large = _workloads(rows, s3_large.SECTION)
    rss = [
        (r.workload, r.contender, r.contender) for r in rows if r.section == s3_large.RSS_SECTION
    ]
    local_small = [(w, local.LIBRARY, local.HOP) for w in _workloads(rows, local.SMALL_SECTION)]
    local_large = [
        (w, local.LARGE_LIBRARY, local.LARGE_BASE) for w in _workloads(rows, local.LARGE_SECTION)
    ]
    s = s3_small.SECTION
    checks: list[tuple[str, tuple[str, bool | None]]] = [
        (
            "S3 small ops/s >= 0.95 x aioboto3 (one client)",
            _check(rows, s, [(w, lib, raw) for w in small], _ops, lambda v: v >= 0.95),
        ),
        (
            "S3 small ops/s >= 20 x client per call",
            _check(rows, s, [(w, lib, naive) for w in small], _ops, lambda v: v >= 20, "{:.0f}x"),
        ),
        (
            "S3 client CPU/op <= 0.7 x aioboto3 (one client)",
            _check(rows, s, [(w, lib, raw) for w in small], _cpu, lambda v: v <= 0.7),
        ),
        (
            "S3 large MB/s >= 0.95 x aioboto3 (one client)",
            _check(
                rows, s3_large.SECTION, [(w, lib, raw) for w in large], _mbs, lambda v: v >= 0.95
            ),
        ),
        (
            "S3 large client peak RSS < 100 MiB",
            _check(
                rows,
                s3_large.SECTION,
                [(w, lib, lib) for w in large],
                _rss_mib,
                lambda v: v < 100,
                "{:.0f} MiB",
            ),
        ),
        (
            "S3 obstore client CPU/op <= 0.35 x aioboto3 (one client)",
            _check(rows, s, [(w, ob, raw) for w in small], _cpu, lambda v: v <= 0.35),
        ),
        (
            "S3 obstore ops/s >= 1.5 x aioboto3 (one client), c=32",
            _check(rows, s, [(w, ob, raw) for w in small if "c=32" in w], _ops, lambda v: v >= 1.5),
        ),
        (
            "S3 obstore large MB/s >= 0.95 x aioboto3 (one client)",
            _check(
                rows, s3_large.SECTION, [(w, ob, raw) for w in large], _mbs, lambda v: v >= 0.95
            ),
        ),
        (
            "S3 obstore large client peak RSS < 100 MiB",
            _check(
                rows,
                s3_large.SECTION,
                [(w, ob, ob) for w in large],
                _rss_mib,
                lambda v: v < 100,
                "{:.0f} MiB",
            ),
        ),
        (
            "upload_file + download_file peak RSS < 100 MiB above baseline",
            _check(rows, s3_large.RSS_SECTION, rss, _rss_mib, lambda v: v < 100, "{:.0f} MiB"),
        ),
        (
            "local small files >= 0.9 x one to_thread hop",
            _check(rows, local.SMALL_SECTION, local_small, _ops, lambda v: v >= 0.9),
        ),
        (
            "local large file >= 0.8 x sync 1 MiB chunks",
            _check(rows, local.LARGE_SECTION, local_large, _mbs, lambda v: v >= 0.8),
        ),
        (
            "list_page at depth N/2 <= 3 x the first page",
            _check(
                rows,
                pages.SECTION,
                [(w, pages.DEEP, pages.FIRST) for w in _workloads(rows, pages.SECTION)],
                lambda deep, first: deep.seconds / first.seconds,
                lambda v: v <= 3,
            ),
        ),
        *_ledger_targets(rows),
    ]
    return [Target(name, measured, met) for name, (measured, met) in checks]


def _ledger_targets(rows: list[Row]) -> list[tuple[str, tuple[str, bool | None]]]:
    """The shared quota ledger's: its save rate against the in-process ledger's (a cost
    of 1.3 x is a rate of 1 / 1.3), and flat from 0 to N stored objects."""
    section, redis, base = quota_redis.SECTION, "Redis ledger", quota_redis.BASE
    workloads = _workloads(rows, section)
    if not workloads:
        return []
    flat = [w for w in workloads if w.startswith("memory")]
    # (workloads, their name, the cost they may have against the in-process ledger's)
    costs = [("local", "local", 1.3), ("s3", "S3", 1.1)]
    return [
        *(
            (
                f"Redis ledger {label} save cost <= {cost} x the in-process ledger's "
                f"(rate >= {1 / cost:.2f} x)",
                _check(
                    rows,
                    section,
                    [(w, redis, base) for w in workloads if w.startswith(store)],
                    _ops,
                    functools.partial(_at_least, 1 / cost),
                ),
            )
            for store, label, cost in costs
        ),
        ("Redis ledger flat from 0 to N objects (rate at N >= 0.9 x at 0)", _flat(rows, flat)),
    ]


def _at_least(bound: float, value: float) -> bool:
    return value >= bound


def _flat(rows: list[Row], workloads: list[str]) -> tuple[str, bool | None]:
    """The Redis ledger's rate over N stored objects against its rate over none."""
    found = [_find(rows, quota_redis.SECTION, w, "Redis ledger") for w in workloads]
    zero, many = found if len(found) == 2 else (None, None)
    if zero is None or many is None or zero.error or many.error or not zero.ops or not many.ops:
        return "n/a", None
    ratio = many.ops_per_s / zero.ops_per_s
    return f"{workloads[1]}: {ratio:.2f} of {workloads[0]}", ratio >= 0.9


def _pages_table(rows: list[Row]) -> list[str]:
    lines = []
    for workload in _workloads(rows, pages.SECTION):
        first = _find(rows, pages.SECTION, workload, pages.FIRST)
        deep = _find(rows, pages.SECTION, workload, pages.DEEP)
        if first is None or deep is None:
            continue
        ratio = deep.seconds / first.seconds if first.seconds else float("nan")
        cells = [f"{first.seconds * 1e3:.1f}", f"{deep.seconds * 1e3:.1f}", f"{ratio:.2f}"]
        lines.append([workload, *cells])
    return _table(["workload", "first page (ms)", "page at depth N/2 (ms)", "ratio"], lines)


def render(rows: list[Row], env: dict[str, str], scale: str, seconds: float) -> str:
    lines = [f"# file_storage benchmarks ({scale} run)", ""]
    lines.append(
        f"{env['date']}, file_storage at {env['commit']}; {env['cpu']}, {env['ram']} RAM, "
        f"{env['os']}; Python {env['python']}; "
        + ", ".join(f"{p} {env[p]}" for p in PACKAGES)
        + f". The run took {seconds / 60:.1f} min."
    )
    lines += ["", "## Targets", ""]
    mark = {True: "met", False: "**missed**", None: "n/a"}
    lines += _table(
        ["target", "measured (file_storage ÷ baseline, same run)", "verdict"],
        ([t.name, t.measured, mark[t.met]] for t in targets(rows)),
    )
    lines += [f"## {s3_small.SECTION}", ""]
    lines += _ops_table(rows, s3_small.SECTION, sc.RAW)
    for section in dict.fromkeys(r.section for r in rows):
        if section.startswith(s3_small.TRANSPORTS_SECTION):
            lines += [f"## {section}", "", s3_small.TRANSPORTS_NOTE, ""]
            lines += _ops_table(rows, section, sc.RAW)
    lines += [f"## {s3_small.LIST_SECTION}", "", "Rate and CPU are per key listed.", ""]
    lines += _ops_table(rows, s3_small.LIST_SECTION, sc.RAW, "keys/s")
    lines += [f"## {s3_small.TUNING_SECTION}", ""]
    lines += _ops_table(rows, s3_small.TUNING_SECTION, "defaults")
    lines += [f"## {s3_large.SECTION}", "", "Client CPU is per transfer.", ""]
    lines += _bytes_table(rows, s3_large.SECTION, sc.RAW, rss=True)
    lines += [f"## {s3_large.RSS_SECTION}", ""]
    lines += _bytes_table(rows, s3_large.RSS_SECTION, None, rss=True)
    lines += [f"## {local.SMALL_SECTION}", ""]
    lines += _ops_table(rows, local.SMALL_SECTION, local.HOP)
    lines += [f"## {local.LARGE_SECTION}", "", "Best of the rounds; client CPU is per file.", ""]
    lines += _bytes_table(rows, local.LARGE_SECTION, local.LARGE_BASE, rss=False)
    lines += [f"## {quota.SECTION}", ""]
    lines += _quota_table(rows)
    if any(r.section == quota_redis.SECTION for r in rows):
        lines += [f"## {quota_redis.SECTION}", ""]
        lines += _ops_table(rows, quota_redis.SECTION, quota_redis.BASE)
    lines += [f"## {quota.IMPORT_SECTION}", ""]
    for row in (r for r in rows if r.section == quota.IMPORT_SECTION):
        lines.append(
            f"`import file_storage`: {row.seconds * 1e3:.0f} ms above the bare interpreter "
            f"({row.extra['interpreter_s'] * 1e3:.0f} ms), {row.workload}; {row.note}."
        )
    if any(r.section == pages.SECTION for r in rows):
        lines += ["", f"## {pages.SECTION}", "", "Best of 5 runs.", ""]
        lines += _pages_table(rows)
    if any(r.section == migrate.SECTION for r in rows):
        lines += [
            "",
            f"## {migrate.SECTION}",
            "",
            "Peak RSS is above the baseline after imports.",
            "",
        ]
        lines += _bytes_table(rows, migrate.SECTION, None, rss=True)
    return "\n".join(lines).rstrip() + "\n"
