"""SVG charts of a benchmark run, for docs/benchmarks.md.

``python -m benchmarks.plots [latest.json] [--out DIR]`` draws them from the numbers a
run wrote (``make bench`` does this after every full run):

- ``s3-small.svg``: ops/s and client CPU per op of every contender, small S3 objects;
- ``large.svg``: MB/s of large S3 transfers and local files, and client peak RSS;
- ``quota.svg``: the cost of a save with and without a quota, against the object count.

The output is reproducible (no dates, fixed ids), so an unchanged run changes no file.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "img" / "benchmarks"

# the section titles the benchmark modules give their rows (kept here as plain strings so
# plotting needs neither psutil nor a moto server)
S3_SMALL = "S3 small objects (moto server)"
S3_LARGE = "S3 large objects (moto server)"
LOCAL_LARGE = "local large file"
QUOTA = "quota cost (4 KiB save)"

Row = Mapping[str, Any]


def _rows(rows: Iterable[Row], section: str) -> list[Row]:
    return [r for r in rows if r["section"] == section and not r.get("error")]


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _grouped_bars(
    ax: Any, rows: Sequence[Row], value: str, label: str, *, log: bool = False
) -> None:
    """One group per workload, one bar per contender, in the order the run measured."""
    workloads = _ordered(r["workload"] for r in rows)
    contenders = _ordered(r["contender"] for r in rows)
    width = 0.8 / max(len(contenders), 1)
    for i, contender in enumerate(contenders):
        xs, ys = [], []
        for x, workload in enumerate(workloads):
            for r in rows:
                if (r["workload"], r["contender"]) == (workload, contender) and r.get(value):
                    xs.append(x + (i - (len(contenders) - 1) / 2) * width)
                    ys.append(r[value])
        ax.bar(xs, ys, width, label=contender, color=f"C{i}")
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel(label)
    if log:
        ax.set_yscale("log")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top * (10 if log else 1.4))  # headroom for the legend
    ax.grid(axis="y", alpha=0.3)


def _figure(nrows: int, ncols: int, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "file_storage", "svg.fonttype": "none"})
    return plt.subplots(nrows, ncols, figsize=(10, height), squeeze=False)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


def plot_s3_small(rows: Sequence[Row], path: Path) -> Path | None:
    small = _rows(rows, S3_SMALL)
    if not small:
        return None
    fig, axes = _figure(2, 1, 7.5)
    _grouped_bars(axes[0][0], small, "ops_per_s", "ops/s (log)", log=True)
    axes[0][0].set_title("Small S3 objects: throughput (higher is better)")
    axes[0][0].legend(fontsize="small", ncols=3)
    _grouped_bars(axes[1][0], small, "cpu_per_op_us", "client CPU per op, µs (log)", log=True)
    axes[1][0].set_title("Small S3 objects: client CPU per op (lower is better)")
    return _save(fig, path)


def plot_large(rows: Sequence[Row], path: Path) -> Path | None:
    s3 = _rows(rows, S3_LARGE)
    local = _rows(rows, LOCAL_LARGE)
    if not s3 and not local:
        return None
    fig, axes = _figure(3, 1, 10.5)
    if s3:
        _grouped_bars(axes[0][0], s3, "mb_per_s", "MB/s")
        axes[0][0].set_title("Large S3 objects: MB/s (higher is better)")
        axes[0][0].legend(fontsize="small", ncols=3)
        mib = [{**r, "peak_mib": (r.get("peak_rss") or 0) / 2**20} for r in s3]
        _grouped_bars(axes[1][0], mib, "peak_mib", "MiB above baseline")
        axes[1][0].set_title("Large S3 objects: client peak RSS (lower is better)")
    if local:
        _grouped_bars(axes[2][0], local, "mb_per_s", "MB/s (log)", log=True)
        axes[2][0].set_title("Local large file: MB/s (higher is better)")
        axes[2][0].legend(fontsize="small", ncols=2)
    return _save(fig, path)


def plot_quota(rows: Sequence[Row], path: Path) -> Path | None:
    quota = _rows(rows, QUOTA)
    if not quota:
        return None
    fig, axes = _figure(1, 1, 4)
    ax = axes[0][0]
    parsed = []  # workloads read "memory, 10,000 objects"
    for r in quota:
        match = re.fullmatch(r"(.+), ([\d,]+) objects", r["workload"])
        if match:
            parsed.append((match.group(1), int(match.group(2).replace(",", "")), r))
    for i, backend in enumerate(_ordered(b for b, _, _ in parsed)):
        for contender, style in (("no quota", "--"), ("max_size_bytes set", "-")):
            points = sorted(
                (count, r["ops_per_s"])
                for b, count, r in parsed
                if b == backend and r["contender"] == contender
            )
            xs = [max(count, 1) for count, _ in points]
            ys = [1e6 / rate for _, rate in points]
            ax.plot(xs, ys, style, marker="o", color=f"C{i}", label=f"{backend}, {contender}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("objects already stored (0 drawn at 1)")
    ax.set_ylabel("µs per 4 KiB save (log)")
    ax.set_title("Quota cost: a save with and without a quota (closer lines are better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def write_plots(rows: Sequence[Row], out: Path) -> list[Path]:
    """Draw every chart the rows have data for into ``out``; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    drawn = [
        plot_s3_small(rows, out / "s3-small.svg"),
        plot_large(rows, out / "large.svg"),
        plot_quota(rows, out / "quota.svg"),
    ]
    return [p for p in drawn if p is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--out", type=Path, default=DOCS_IMAGES, help="where the SVGs go")
    args = parser.parse_args(argv)
    payload = json.loads(args.results.read_text(encoding="utf-8"))
    for path in write_plots(payload["rows"], args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
