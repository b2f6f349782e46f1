"""``--env-file``, ``migrate --to-env`` and ``.env`` that are not plain, small text files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import cli, cli_env, command

SECRET = "sEcReT-in-the-env-file-never-printed"


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("option", ["--env-file", "--to-env"])
def test_a_fifo_given_as_env_file_is_a_usage_error_not_a_hang(tmp_path: Path, option: str) -> None:
    # reading a FIFO nobody writes to blocked the command forever (cron piled them up)
    fifo = _fifo(tmp_path / "settings.env")
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    args = ["--env-file", fifo, "ls"] if option == "--env-file" else ["migrate", "--to-env", fifo]
    result = cli(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(b"Usage: file-storage")
    assert b"is not a regular file" in result.stderr


def test_a_device_given_as_env_file_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("--env-file", "/dev/zero", "ls", env=cli_env())
    assert result.returncode == 2
    assert b"'/dev/zero' is not a regular file" in result.stderr


def test_a_huge_env_file_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "huge.env"
    file.write_text(f"STORAGE_S3_SECRET_ACCESS_KEY={SECRET}\n" + "#" * 2**21 + "\n")
    result = cli("--env-file", file, "ls", env=cli_env())
    assert result.returncode == 2
    assert b"is larger than 1 MiB" in result.stderr
    assert SECRET.encode() not in result.stdout + result.stderr


def test_a_symlink_to_an_env_file_is_followed(tmp_path: Path) -> None:
    # how orchestrators mount secrets: the link is the operator's own choice
    real = tmp_path / "real.env"
    real.write_text(f"STORAGE_TYPE=LOCAL\nSTORAGE_LOCAL_PATH={tmp_path / 'storage'}\n")
    (tmp_path / "link.env").symlink_to(real)
    result = cli("--env-file", tmp_path / "link.env", "ls", env=cli_env())
    assert (result.returncode, result.stderr) == (0, b"")


def test_a_fifo_as_dotenv_exits_1_in_one_line_not_a_hang(tmp_path: Path) -> None:
    _fifo(tmp_path / ".env")
    result = subprocess.run(
        command("ls"), env=cli_env(), cwd=tmp_path, capture_output=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [b"file-storage: the env file .env: not a regular file"]


def test_a_folder_named_dotenv_is_skipped_as_the_application_skips_it(tmp_path: Path) -> None:
    # `python -m venv .env` is a common habit; StorageSettings() ignores such a folder, and
    # the command, which reads the settings as the application does, refused to run
    (tmp_path / ".env" / "bin").mkdir(parents=True)
    (tmp_path / "storage" / "a").mkdir(parents=True)
    (tmp_path / "storage" / "a" / "b.txt").write_bytes(b"x")
    result = subprocess.run(
        command("ls"), env=cli_env(), cwd=tmp_path, capture_output=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"a/b.txt\n", b"")
