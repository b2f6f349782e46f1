"""What the command line writes: escaped for a terminal, and a closed or full output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from file_storage.backends.local import LocalStorageBackend
from tests.cli.helpers import cli, cli_env, command

# an OSC title change, a bell, a line break faking an output line, an 8-bit CSI (C1) and a
# right-to-left override: each rewrites or disguises what the operator's terminal shows
HOSTILE = "\x1b]0;owned\x07\nsize: 0\x9b31m\u202eevil"


@pytest.fixture
async def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    backend = LocalStorageBackend(root)
    async with backend:
        await backend.save("note.txt", b"x", metadata={"note": HOSTILE})
        await backend.save("\u202etxt.exe", b"y")
        # more output than a pipe holds (64 KiB; 1 MiB when raised): the writer meets the
        # closed end
        await backend.save("big", b"z" * 2**22)
        for number in range(2000):
            await backend.save(f"many/{'x' * 80}/{number:05}", b"")
    return root


def _no_raw_controls(text: str) -> None:
    assert not any(
        (ord(char) < 0x20 and char != "\n") or 0x7F <= ord(char) <= 0x9F or char == "\u202e"
        for char in text
    ), text


def test_stat_escapes_control_characters_of_metadata(storage: Path) -> None:
    result = cli("stat", "note.txt", env=cli_env(STORAGE_LOCAL_PATH=str(storage)))
    assert result.returncode == 0
    out = result.stdout.decode()
    _no_raw_controls(out)
    assert "metadata.note: \\x1b]0;owned\\x07\\nsize: 0\\x9b31m\\u202eevil\n" in out
    assert [line for line in out.splitlines() if line.startswith("size: ")] == ["size: 1"]


def test_ls_escapes_bidi_controls_of_keys(storage: Path) -> None:
    result = cli("ls", "--long", env=cli_env(STORAGE_LOCAL_PATH=str(storage)))
    assert result.returncode == 0
    _no_raw_controls(result.stdout.decode())
    assert "\\u202etxt.exe\n" in result.stdout.decode()


def test_json_output_escapes_controls_and_round_trips(storage: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(storage))
    result = cli("stat", "note.txt", "--json", env=env)
    assert result.returncode == 0
    _no_raw_controls(result.stdout.decode())
    assert json.loads(result.stdout)["metadata"]["note"] == HOSTILE
    listing = cli("ls", "--json", env=env)
    _no_raw_controls(listing.stdout.decode())
    assert "\u202etxt.exe" in [item["key"] for item in json.loads(listing.stdout)]


@pytest.mark.parametrize("args", [["ls"], ["ls", "--long"], ["ls", "--json"], ["cat", "big"]])
def test_a_reader_that_stops_early_ends_the_command_quietly_with_141(
    storage: Path, args: list[str]
) -> None:
    # `file-storage ls | head -1`: no traceback, and the status a shell tool killed by
    # SIGPIPE gives (128 + 13), never 1 ("the operation failed") nor 0
    with subprocess.Popen(
        command(*args),
        env=cli_env(STORAGE_LOCAL_PATH=str(storage)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.read(1)
        process.stdout.close()
        stderr = process.stderr.read()
        code = process.wait(timeout=120)
    assert (code, stderr) == (141, b"")


def test_a_full_output_exits_1_in_one_line(storage: Path) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            command("stat", "note.txt"),
            env=cli_env(STORAGE_LOCAL_PATH=str(storage)),
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        b"file-storage: cannot write the output: No space left on device"
    ]
