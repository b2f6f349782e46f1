"""The benchmark charts: drawn from a run's rows, text kept as text, reproducible.

Needs matplotlib, which only the bench extra installs (``make bench`` uses it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmarks import plots

pytest.importorskip("matplotlib")

ROWS = [
    {
        "section": plots.S3_SMALL,
        "workload": "PUT 4 KiB, c=1",
        "contender": c,
        "ops_per_s": o,
        "cpu_per_op_us": u,
    }
    for c, o, u in [("file_storage", 390.0, 1089.0), ("aioboto3 (one client)", 148.0, 1394.0)]
] + [
    {
        "section": plots.S3_LARGE,
        "workload": "upload 256 MiB",
        "contender": "file_storage",
        "mb_per_s": 190.0,
        "peak_rss": 85 * 2**20,
    },
    {
        "section": plots.LOCAL_LARGE,
        "workload": "write 1 GiB",
        "contender": "dd bs=1M",
        "mb_per_s": 780.0,
    },
    {
        "section": plots.QUOTA,
        "workload": "memory, 10,000 objects",
        "contender": "no quota",
        "ops_per_s": 88_000.0,
    },
    {
        "section": plots.QUOTA,
        "workload": "memory, 10,000 objects",
        "contender": "max_size_bytes set",
        "ops_per_s": 70_000.0,
    },
    {
        "section": plots.S3_SMALL,
        "workload": "GET 4 KiB, c=32",
        "contender": "s3fs",
        "error": "n/a (not installed)",
    },
]


def test_every_chart_is_drawn_as_svg_naming_the_contenders(tmp_path: Path) -> None:
    drawn = plots.write_plots(ROWS, tmp_path)
    assert sorted(p.name for p in drawn) == ["large.svg", "quota.svg", "s3-small.svg"]
    small = (tmp_path / "s3-small.svg").read_text(encoding="utf-8")
    ET.fromstring(small)  # well-formed
    assert "aioboto3 (one client)" in small
    assert "GET 4 KiB" not in small  # a contender that failed is left out, not drawn as 0
    assert "memory, max_size_bytes set" in (tmp_path / "quota.svg").read_text(encoding="utf-8")


def test_charts_are_reproducible(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in plots.write_plots(ROWS, tmp_path / "a")]
    second = [p.read_bytes() for p in plots.write_plots(ROWS, tmp_path / "b")]
    assert first == second


def test_sections_without_rows_draw_nothing(tmp_path: Path) -> None:
    assert plots.write_plots([r for r in ROWS if r["section"] == plots.QUOTA], tmp_path) == [
        tmp_path / "quota.svg"
    ]
