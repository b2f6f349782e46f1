"""Two listings of the root folder at once each see every entry.

A descriptor from ``os.dup`` shares its directory read position with the original, so
two threads listing the root at the same moment (a listing, and the background sweep of
stale temp files that starts on first use) used to steal each other's entries: a listing
came back empty now and then. Each open of the root is now its own.
"""

from __future__ import annotations

import os
from pathlib import Path

from file_storage.backends.local._fs import Root, open_dir


def test_interleaved_listings_of_the_root_each_see_everything(tmp_path: Path) -> None:
    names = [f"{i:03d}.txt" for i in range(5)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    root = Root(tmp_path)
    fd_a, _ = open_dir(root, [])
    fd_b, _ = open_dir(root, [])
    try:
        with os.scandir(fd_a) as first:
            seen_first = [next(first).name]  # one thread mid-way through the folder...
            with os.scandir(fd_b) as second:  # ...while another lists it whole
                assert sorted(e.name for e in second) == names
            seen_first += [e.name for e in first]
        assert sorted(seen_first) == names
    finally:
        os.close(fd_a)
        os.close(fd_b)
        root.close()
