"""Every Python example in README.md and docs/ runs as it is written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SKIP = "<!-- docs-test: skip -->"


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        for i, match in enumerate(FENCE.finditer(text)):
            before = text[: match.start()].rstrip().splitlines()[-1:]
            if before and before[0].strip() == SKIP:
                continue
            found.append((f"{doc.name}#{i}", match.group(1)))
    return found


EXAMPLES = examples()


@pytest.fixture(scope="session")
def ffmpeg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an ``ffmpeg`` on it: the static build the imageio-ffmpeg wheel ships."""
    import imageio_ffmpeg

    folder = tmp_path_factory.mktemp("bin")
    (folder / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    return folder


@pytest.mark.parametrize("code", [code for _, code in EXAMPLES], ids=[n for n, _ in EXAMPLES])
def test_doc_example_runs(code: str, tmp_path: Path, ffmpeg_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "AWS_"))}
    env["PATH"] = f"{ffmpeg_dir}{os.pathsep}{env.get('PATH', '')}"
    env["STORAGE_LOCAL_PATH"] = str(tmp_path / "storage")
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
