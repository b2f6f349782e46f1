"""The shell examples of docs/cli.md and docs/migration.md run as they are written.

Each doc's ```sh blocks run in order in one bash (``set -euo pipefail``), in a fresh
folder, with ``file-storage`` on PATH. The S3-compatible server the docs show at
``http://127.0.0.1:9000`` is the test's moto server, with the bucket ``media`` created.
(Python blocks run in tests/test_docs.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import ROOT, cli_env
from tests.conftest import boto3_client

SH = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
DOC_ENDPOINT = "http://127.0.0.1:9000"


@pytest.mark.parametrize("doc", ["cli.md", "migration.md"])
def test_doc_shell_examples_run(doc: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    blocks = SH.findall(text)
    assert blocks
    script = "\n".join(["set -euo pipefail", *blocks])
    if DOC_ENDPOINT in script:
        endpoint = request.getfixturevalue("moto_endpoint")
        client = boto3_client(endpoint)
        client.create_bucket(Bucket="media")
        request.addfinalizer(lambda: _drop(client, "media"))
        script = script.replace(DOC_ENDPOINT, endpoint)
    env = cli_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]


def _drop(client: Any, bucket: str) -> None:
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)
    client.close()
