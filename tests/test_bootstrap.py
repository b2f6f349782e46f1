"""`make test` on a new machine: the scripts that fetch the test servers never stop it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _path_without_npm(tmp_path: Path) -> str:
    """A PATH with the tools the scripts use, no npm, and an ``id`` that is not root."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "grep", "mkdir"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    fake_id = bin_dir / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    return str(bin_dir)


def test_ensure_azurite_without_npm_says_the_azure_tests_skip_and_exits_0(
    tmp_path: Path,
) -> None:
    # a checkout of its own (the script installs into .cache/npm beside it), as a fresh clone
    script = tmp_path / "clone" / "scripts" / "ensure-azurite"
    script.parent.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "ensure-azurite", script)
    env = {"PATH": _path_without_npm(tmp_path), "HOME": os.environ.get("HOME", "/")}
    result = subprocess.run(
        ["/bin/bash", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "the Azure tests will be skipped" in result.stderr
