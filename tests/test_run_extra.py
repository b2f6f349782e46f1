"""`make run` installs what the example service needs, not the dev toolchain."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def names(requirements: list[str]) -> set[str]:
    """Distribution names (extras dropped, normalized) of requirement strings."""
    found = set()
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert name is not None, requirement
        found.add(re.sub(r"[-_.]+", "-", name.group()).lower())
    return found


def expanded(extra: str) -> set[str]:
    """Distribution names an extra installs, its own extras (``file_storage[a,b]``) included."""
    found = set()
    for requirement in EXTRAS[extra]:
        own = re.fullmatch(r"file_storage\[([a-z0-9_,]+)\]", requirement)
        if own is None:
            found |= names([requirement])
        else:
            for name in own.group(1).split(","):
                found |= expanded(name)
    return found


def test_the_run_extra_is_fastapi_and_uvicorn_only() -> None:
    assert EXTRAS["run"] == ["file_storage[fastapi]", "uvicorn>=0.29"]
    dev_only = expanded("dev") - expanded("run")
    assert {"pytest", "moto", "playwright", "mypy", "imageio-ffmpeg"} <= dev_only


def test_the_example_imports_only_what_the_run_extra_installs() -> None:
    tree = ast.parse((ROOT / "examples" / "app.py").read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "file_storage"}
    installed_by_run = (
        names(PYPROJECT["project"]["dependencies"])
        | names(EXTRAS["fastapi"])
        | names(EXTRAS["run"])
    )
    dists = packages_distributions()
    for module in third_party:
        assert names(dists[module]) & installed_by_run, f"{module} is not in the [run] set"


def test_make_run_installs_the_run_extra_not_dev(tmp_path: Path) -> None:
    # -B -n: every command the target would run from nothing, none run
    commands = subprocess.run(
        ["make", "-B", "-n", "run", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in commands.splitlines() if "pip install" in line and "-e" in line]
    assert installs == [f"{tmp_path / 'venv'}/bin/python -m pip install --quiet -e '.[run]'"]
