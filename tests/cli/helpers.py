"""Run the ``file-storage`` command line as a user does: a subprocess, its exit code, its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FAKE_KEY_ID, FAKE_SECRET

ROOT = Path(__file__).resolve().parents[2]


def cli_env(**settings: str) -> dict[str, str]:
    """The test's (scrubbed) environment plus ``STORAGE_*`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORAGE_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings)
    return env


def s3_settings(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "STORAGE_TYPE": "S3",
        "STORAGE_S3_BUCKET": bucket,
        "STORAGE_S3_ENDPOINT_URL": endpoint,
        "STORAGE_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
        "STORAGE_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
        "STORAGE_S3_ADDRESSING_STYLE": "path",
    }


def write_env_file(path: Path, settings: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    return path


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "file_storage", *map(str, args)]


def cli(
    *args: str | Path, env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command(*args), env=env, input=stdin, capture_output=True, timeout=120)
