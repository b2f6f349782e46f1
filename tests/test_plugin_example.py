"""The example backend of docs/plugins.md is the file in examples/plugin_backend/, word for
word, that package registers it the documented way, and its own test file (the one
docs/plugins.md and docs/testing.md show) passes the conformance suite through the
file_storage.testing plugin."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin_backend"


def test_the_documented_backend_is_the_example_file() -> None:
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    fence = re.search(r'^```python title="dict_storage.py"\n(.*?)^```', page, re.S | re.M)
    assert fence is not None
    assert fence.group(1) == (EXAMPLE / "dict_storage.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", ["plugins.md", "testing.md"])
def test_the_documented_test_file_is_the_example_file(page: str) -> None:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    fence = re.search(r'^```python title="test_dict_storage.py"\n(.*?)^```', text, re.S | re.M)
    assert fence is not None
    assert fence.group(1) == (EXAMPLE / "test_dict_storage.py").read_text(encoding="utf-8")


def test_the_example_passes_the_conformance_suite(pytester: pytest.Pytester) -> None:
    # the example's two files in a project of their own, as their author runs them
    for name in ("dict_storage.py", "test_dict_storage.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    pytester.makepyprojecttoml(
        "[tool.pytest.ini_options]\n"
        'asyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "function"\n'
        'filterwarnings = ["error"]\n'
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert outcomes["passed"] > 500
    # only the versioning, object-or-folder, exact expiry, exact and pinned move and write
    # ETag tests skip, each with the reason
    assert outcomes["skipped"] == 78
    result.stdout.fnmatch_lines(["SKIPPED * the backend keeps no prior versions *(lacks versions)"])
    result.stdout.fnmatch_lines(["SKIPPED * lies under an object *(lacks folder_checks)"])
    result.stdout.fnmatch_lines(["SKIPPED * rewritten while purge_expired *(lacks exact_expiry)"])
    result.stdout.fnmatch_lines(["SKIPPED * a move's source between *(lacks exact_moves)"])
    result.stdout.fnmatch_lines(["SKIPPED * a stat after the write *(lacks write_etags)"])


def test_the_example_package_registers_its_entry_point() -> None:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = project["project"]["entry-points"]["file_storage.backends"]
    assert entry_points == {"DICT": "dict_storage:build"}
