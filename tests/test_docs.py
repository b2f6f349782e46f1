"""Every Python example in README.md, docs/ and the package's docstrings (which the API
reference shows) runs as it is written, as a reader runs it.

Each example runs in a fresh interpreter whose working directory is a new, empty temp
folder (so ``./storage``, the default root, is its own), with no ``STORAGE_*``/``AWS_*``
variables and without the repository on ``sys.path``: only the installed package.

- A fence titled with a file name (```` ```python title="app.py" ````) is a file of the
  reader's project: it runs too, and is written into the working directory of every
  example of its page, which may import it.
- ``<!-- docs-test: s3 -->`` on the line before a fence runs it a second time with
  ``STORAGE_TYPE=S3`` against a fresh bucket on the moto server.
- ``<!-- docs-test: s3-zero -->`` runs it only against moto, as a reader starting from
  nothing: ``STORAGE_S3_BUCKET`` names a bucket that does not exist yet, and only the
  variables of the page's ``.env`` are set (no addressing style).
- ``<!-- docs-test: redis -->`` runs it with ``STORAGE_QUOTA_REDIS_URL`` naming a
  throwaway ``redis-server`` (skipped where none is installed).
- ``<!-- docs-test: skip -->`` skips it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, boto3_client
from tests.quota_redis.server import REDIS_SERVER, RedisServer

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
TITLE = re.compile(r'title="([\w.-]+\.py)"')
MARKER = re.compile(r"^<!-- docs-test: ([\w-]+) -->$")


@dataclass(frozen=True)
class Example:
    name: str
    code: str
    s3: bool
    files: tuple[tuple[str, str], ...]  # (name, code) of the page's titled fences
    redis: bool = False
    s3_zero: bool = False  # only on S3, in a bucket the example creates


def examples() -> list[Example]:
    found = []
    # the docstrings too: the API reference page renders their fences
    sources = sorted((ROOT / "file_storage").rglob("*.py"))
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sources]:
        text = doc.read_text(encoding="utf-8")
        name = doc.relative_to(ROOT).as_posix()
        fences = list(FENCE.finditer(text))
        files = tuple(
            (title.group(1), m.group(2)) for m in fences if (title := TITLE.search(m.group(1)))
        )
        for i, match in enumerate(fences):
            before = text[: match.start()].rstrip().splitlines()[-1:]
            marker = MARKER.match(before[0].strip()) if before else None
            kind = marker.group(1) if marker else None
            if kind not in (None, "skip", "s3", "s3-zero", "redis"):
                raise ValueError(f"{name}: unknown marker docs-test: {kind}")
            if kind == "skip":
                continue
            found.append(
                Example(
                    f"{name}#{i}",
                    match.group(2),
                    kind in ("s3", "s3-zero"),
                    files,
                    kind == "redis",
                    kind == "s3-zero",
                )
            )
    return found


EXAMPLES = examples()
RUNS = [pytest.param(e, "local", id=f"{e.name}-local") for e in EXAMPLES if not e.s3_zero] + [
    pytest.param(e, "s3", id=f"{e.name}-s3", marks=pytest.mark.s3) for e in EXAMPLES if e.s3
]


def _run(
    code: str, cwd: Path, env: dict[str, str], files: tuple[tuple[str, str], ...] = ()
) -> subprocess.CompletedProcess[str]:
    for name, text in files:
        (cwd / name).write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _reader_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE_", "AWS_", "PYTHON", "EXAMPLE_"))
    }
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "no-aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.fixture(scope="module")
def docs_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it: apt redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("docs-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(("example", "where"), RUNS)
def test_doc_example_runs(
    example: Example, where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = _reader_env(tmp_path)
    if example.redis:
        server: RedisServer = request.getfixturevalue("docs_redis")
        env["STORAGE_QUOTA_REDIS_URL"] = server.url
        env["STORAGE_QUOTA_REDIS_NAMESPACE"] = f"docs:{uuid.uuid4().hex[:12]}"
    if where == "s3":
        endpoint: str = request.getfixturevalue("moto_endpoint")
        bucket = f"docs-{uuid.uuid4().hex[:20]}"
        env |= {
            "STORAGE_TYPE": "S3",
            "STORAGE_S3_BUCKET": bucket,
            "STORAGE_S3_ENDPOINT_URL": endpoint,
            "STORAGE_S3_ACCESS_KEY_ID": FAKE_KEY_ID,
            "STORAGE_S3_SECRET_ACCESS_KEY": FAKE_SECRET,
        }
        if not example.s3_zero:
            client = boto3_client(endpoint)
            client.create_bucket(Bucket=bucket)
            client.close()
            env["STORAGE_S3_ADDRESSING_STYLE"] = "path"
    workdir = tmp_path / "project"
    workdir.mkdir()
    result = _run(example.code, workdir, env, example.files)
    assert result.returncode == 0, result.stderr


def test_examples_run_without_the_repository_on_the_path(tmp_path: Path) -> None:
    # the harness itself: the repository's own folders are not importable from an example
    result = _run("import examples", tmp_path, _reader_env(tmp_path))
    assert "No module named 'examples'" in result.stderr
