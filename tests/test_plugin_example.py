"""The example backend of docs/plugins.md is the file in examples/plugin_backend/, word for
word, and that package registers it the documented way."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin_backend"


def test_the_documented_backend_is_the_example_file() -> None:
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    fence = re.search(r'^```python title="dict_storage.py"\n(.*?)^```', page, re.S | re.M)
    assert fence is not None
    assert fence.group(1) == (EXAMPLE / "dict_storage.py").read_text(encoding="utf-8")


def test_the_example_package_registers_its_entry_point() -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = project["project"]["entry-points"]["file_storage.backends"]
    assert entry_points == {"DICT": "dict_storage:build"}
