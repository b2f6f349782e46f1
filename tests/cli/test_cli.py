"""The ``file-storage`` command line, run as a subprocess against local disk and S3 (moto)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import ROOT, cli, cli_env, command, s3_settings, write_env_file


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The settings of a fresh storage: a local folder, or a fresh moto bucket."""
    if request.param == "local":
        return cli_env(STORAGE_TYPE="LOCAL", STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return cli_env(**s3_settings(endpoint, bucket))


def test_put_ls_stat_cat_get_rm_round_trip(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "report.bin"
    source.write_bytes(b"\x00report\xff!!" * 1000)
    put = cli("put", source, "docs/report.bin", "--content-type", "application/pdf", env=env)
    assert (put.returncode, put.stdout, put.stderr) == (0, b"docs/report.bin\n", b"")
    assert cli("put", source, "docs/b.txt", env=env).returncode == 0

    assert cli("ls", env=env).stdout == b"docs/b.txt\ndocs/report.bin\n"
    long = cli("ls", "docs", "--long", env=env).stdout.decode().splitlines()
    assert long[1].split()[0] == "10000"
    assert long[1].endswith("  docs/report.bin")
    stat = cli("stat", "docs/report.bin", env=env).stdout.decode()
    assert "size: 10000\n" in stat
    assert "content_type: application/pdf\n" in stat
    assert cli("cat", "docs/report.bin", env=env).stdout == source.read_bytes()

    got = cli("get", "docs/report.bin", tmp_path / "out" / "copy.bin", env=env)
    assert got.returncode == 0
    assert (tmp_path / "out" / "copy.bin").read_bytes() == source.read_bytes()

    assert cli("rm", "docs/b.txt", "docs/never-there", env=env).returncode == 0
    assert cli("ls", env=env).stdout == b"docs/report.bin\n"
    wiped = cli("rm", "--prefix", "docs", "--yes", env=env)
    assert (wiped.returncode, wiped.stderr) == (0, b"deleted 1 objects\n")
    assert cli("ls", env=env).stdout == b""


def test_json_output_parses(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    cli("put", source, "j/a.txt", env=env)
    cli("put", source, "j/ü b.txt", env=env)

    listing = json.loads(cli("ls", "--json", env=env).stdout)
    assert [item["key"] for item in listing] == ["j/a.txt", "j/ü b.txt"]
    assert all(item["size"] == 5 for item in listing)
    info = json.loads(cli("stat", "j/a.txt", "--json", env=env).stdout)
    assert (info["key"], info["size"], info["content_type"]) == ("j/a.txt", 5, "text/plain")
    usage = json.loads(cli("du", "j", "--json", env=env).stdout)
    assert usage == {"prefix": "j", "objects": 2, "bytes": 10}
    assert json.loads(cli("ls", "empty", "--json", env=env).stdout) == []


def test_url_prints_a_presigned_url(
    moto_endpoint: str, s3_bucket: str, raw: object, tmp_path: Path
) -> None:
    import urllib.request

    env = cli_env(**s3_settings(moto_endpoint, s3_bucket))
    (tmp_path / "a.txt").write_bytes(b"signed")
    cli("put", tmp_path / "a.txt", "u/a.txt", env=env)
    result = cli("url", "u/a.txt", "--expires", "60", env=env)
    assert result.returncode == 0
    with urllib.request.urlopen(result.stdout.decode().strip(), timeout=30) as answer:
        assert answer.read() == b"signed"


@pytest.mark.parametrize(
    "args",
    [
        ["nosuchcommand"],
        ["ls", "--bogus"],
        ["stat"],
        ["stat", "../escape"],
        ["url", "k", "--expires", "0"],
        ["rm"],
        ["rm", "k", "--prefix", "p"],
        ["migrate"],
        ["migrate", "--to-env", "missing.env"],
        ["--env-file", "missing.env", "ls"],
        ["put", "missing-local-file", "k"],
    ],
)
def test_bad_arguments_exit_2_with_a_usage_line(args: list[str], tmp_path: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    result = cli(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(b"Usage: file-storage")
    assert b"Traceback" not in result.stderr


def test_a_failed_operation_exits_1_in_one_line(tmp_path: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    result = cli("cat", "missing.txt", env=env)
    assert result.returncode == 1
    assert result.stderr == b"file-storage: stream 'missing.txt': object not found\n"
    debug = cli("--debug", "cat", "missing.txt", env=env)
    assert debug.returncode == 1
    assert b"Traceback" in debug.stderr
    assert debug.stderr.endswith(b"file-storage: stream 'missing.txt': object not found\n")


def test_bad_settings_exit_1_naming_the_variable(tmp_path: Path) -> None:
    env = cli_env(STORAGE_TYPE="S3")
    result = cli("ls", env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        b"file-storage: STORAGE_S3_BUCKET: required when STORAGE_TYPE is S3"
    ]


def test_empty_values_in_an_env_file_count_as_unset_as_in_dotenv(tmp_path: Path) -> None:
    # the app's .env worked, the same file given to --env-file failed ("must be a number")
    settings = {
        "STORAGE_LOCAL_PATH": str(tmp_path / "storage"),
        "STORAGE_LOCAL_MAX_SIZE_GB": "",
        "STORAGE_S3_ENDPOINT_URL": "",
        "STORAGE_S3_MAX_CONCURRENCY": "",
    }
    file = write_env_file(tmp_path / "app.env", settings)
    (tmp_path / "a").write_bytes(b"a")
    put = cli("--env-file", file, "put", tmp_path / "a", "e/a", env=cli_env())
    assert (put.returncode, put.stderr) == (0, b"")
    dest = write_env_file(
        tmp_path / "dest.env", {**settings, "STORAGE_LOCAL_PATH": str(tmp_path / "d")}
    )
    moved = cli("--env-file", file, "migrate", "--to-env", dest, env=cli_env())
    assert (moved.returncode, moved.stderr) == (0, b"")
    assert (tmp_path / "d" / "e" / "a").read_bytes() == b"a"


@pytest.mark.parametrize("given", [False, True], ids=["dotenv", "env-file"])
def test_an_env_file_that_is_not_utf8_exits_1_in_one_line(tmp_path: Path, given: bool) -> None:
    # it was a UnicodeDecodeError traceback
    secret = "sEcReT-in-the-env-file-never-printed"
    file = tmp_path / ("app.env" if given else ".env")
    file.write_bytes(
        f"STORAGE_LOCAL_SIGNING_KEY={secret}\nSTORAGE_S3_REGION=\xe9u\n".encode("latin-1")
    )
    args = ["--env-file", file, "ls"] if given else ["ls"]
    result = subprocess.run(
        command(*args), env=cli_env(), cwd=tmp_path, capture_output=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"file-storage: the env file {file.name}: not valid UTF-8 text".encode()
    ]
    assert secret.encode() not in result.stdout + result.stderr


def test_rm_prefix_without_a_terminal_needs_yes(tmp_path: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    (tmp_path / "a").write_bytes(b"a")
    cli("put", tmp_path / "a", "keep/a", env=env)
    result = cli("rm", "--prefix", "keep", env=env, stdin=b"y\n")
    assert result.returncode == 2
    assert b"--yes" in result.stderr
    assert cli("ls", env=env).stdout == b"keep/a\n"


def test_rm_with_an_empty_prefix_deletes_nothing_and_asks_for_all(tmp_path: Path) -> None:
    # `rm --prefix "$DIR" --yes` with DIR unset deleted every object in the storage
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    (tmp_path / "a").write_bytes(b"a")
    cli("put", tmp_path / "a", "keep/a", env=env)
    cli("put", tmp_path / "a", "top.txt", env=env)
    result = cli("rm", "--prefix", "", "--yes", env=env)
    assert result.returncode == 2
    assert b"--all" in result.stderr
    assert cli("ls", env=env).stdout == b"keep/a\ntop.txt\n"

    assert cli("rm", "--all", env=env, stdin=b"y\n").returncode == 2  # no terminal to ask on
    assert cli("rm", "--all", "--prefix", "keep", "--yes", env=env).returncode == 2
    assert cli("rm", "--all", "top.txt", "--yes", env=env).returncode == 2
    assert cli("ls", env=env).stdout == b"keep/a\ntop.txt\n"

    wiped = cli("rm", "--all", "--yes", env=env)
    assert (wiped.returncode, wiped.stderr) == (0, b"deleted 2 objects\n")
    assert cli("ls", env=env).stdout == b""


def test_rm_prefix_with_standard_input_closed_needs_yes(tmp_path: Path) -> None:
    # cron or `<&-`: no stdin at all was an AttributeError traceback
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    (tmp_path / "a").write_bytes(b"a")
    cli("put", tmp_path / "a", "keep/a", env=env)
    result = subprocess.run(
        command("rm", "--prefix", "keep"),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        preexec_fn=lambda: os.close(0),
    )
    assert result.returncode == 2
    assert result.stderr.startswith(b"Usage: file-storage rm")
    assert b"Traceback" not in result.stderr
    assert cli("ls", env=env).stdout == b"keep/a\n"


def test_env_file_alone_gives_the_settings(tmp_path: Path) -> None:
    file = write_env_file(tmp_path / "app.env", {"STORAGE_LOCAL_PATH": str(tmp_path / "elsewhere")})
    (tmp_path / "a").write_bytes(b"a")
    env = cli_env(STORAGE_TYPE="MEMORY", STORAGE_LOCAL_PATH=str(tmp_path / "ignored"))
    put = cli("--env-file", file, "put", tmp_path / "a", "e/a", env=env)
    assert put.returncode == 0
    assert (tmp_path / "elsewhere" / "e" / "a").read_bytes() == b"a"
    assert not (tmp_path / "ignored").exists()


def test_no_progress_output_when_not_on_a_terminal(tmp_path: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    (tmp_path / "big").write_bytes(b"x" * (3 << 20))
    assert cli("put", tmp_path / "big", "big", env=env).stderr == b""
    assert cli("get", "big", tmp_path / "back", env=env).stderr == b""


def test_migrate_local_to_s3_reports_json(
    tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(name.encode())
        cli("put", tmp_path / name, f"m/{name}", env=env)
    to_env = write_env_file(tmp_path / "s3.env", s3_settings(moto_endpoint, s3_bucket))
    first = cli("migrate", "--to-env", to_env, "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"copied": 2, "skipped": 0, "failed": {}, "bytes": 10}
    again = cli("migrate", "--to-env", to_env, "--json", "--delete-source", env=env)
    assert json.loads(again.stdout) == {"copied": 0, "skipped": 2, "failed": {}, "bytes": 0}
    assert cli("ls", env=env).stdout == b""
    assert cli("ls", env=cli_env(**s3_settings(moto_endpoint, s3_bucket))).stdout == (
        b"m/a.txt\nm/b.txt\n"
    )


def test_migrate_destination_comes_from_its_file_only(tmp_path: Path) -> None:
    # the environment says LOCAL at ./src; an inherited STORAGE_LOCAL_PATH must not
    # redirect the destination back onto the source
    env = cli_env(STORAGE_TYPE="LOCAL", STORAGE_LOCAL_PATH=str(tmp_path / "src"))
    (tmp_path / "a").write_bytes(b"a")
    cli("put", tmp_path / "a", "a", env=env)
    to_env = write_env_file(tmp_path / "dest.env", {"STORAGE_LOCAL_PATH": str(tmp_path / "dst")})
    result = cli("migrate", "--to-env", to_env, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"copied 1, skipped 0, failed 0, 1 B written\n"
    assert (tmp_path / "dst" / "a").read_bytes() == b"a"


def test_migrate_onto_the_same_storage_is_a_usage_error(tmp_path: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "src"))
    to_env = write_env_file(tmp_path / "dest.env", {"STORAGE_LOCAL_PATH": str(tmp_path / "src/x")})
    result = cli("migrate", "--to-env", to_env, "--delete-source", env=env)
    assert result.returncode == 2
    assert b"same storage" in result.stderr


@pytest.mark.parametrize("delete_source", [False, True])
def test_migrate_into_memory_is_a_usage_error_and_keeps_the_source(
    tmp_path: Path, delete_source: bool
) -> None:
    # a MEMORY destination lives in this process only: everything copied there is gone
    # when the command exits, and --delete-source would delete the only copies
    env = cli_env(STORAGE_TYPE="LOCAL", STORAGE_LOCAL_PATH=str(tmp_path / "src"))
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.txt").write_bytes(b"the only copy")
    to_env = write_env_file(tmp_path / "dest.env", {"STORAGE_TYPE": "memory"})
    flags = ["--delete-source"] if delete_source else []
    result = cli("migrate", "--to-env", to_env, *flags, env=env)
    assert result.returncode == 2
    assert b"MEMORY" in result.stderr
    assert result.stdout == b""
    assert (tmp_path / "src" / "a" / "x.txt").read_bytes() == b"the only copy"


def test_migrate_of_a_folder_into_a_destination_beside_it_is_allowed(tmp_path: Path) -> None:
    # the destination lies inside the source's root, but not where the folder moved is
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "src"))
    (tmp_path / "a").write_bytes(b"a")
    cli("put", tmp_path / "a", "old/a", env=env)
    to_env = write_env_file(tmp_path / "d.env", {"STORAGE_LOCAL_PATH": str(tmp_path / "src/new")})
    result = cli("migrate", "--to-env", to_env, "--prefix", "old", "--delete-source", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "src/new/old/a").read_bytes() == b"a"
    assert not (tmp_path / "src/old/a").exists()


GCS = {
    "STORAGE_TYPE": "GCS",
    "STORAGE_GCS_BUCKET": "media",
    "STORAGE_GCS_ENDPOINT_URL": "http://127.0.0.1:9",
}
AZURE = {
    "STORAGE_TYPE": "AZURE",
    "STORAGE_AZURE_ACCOUNT": "acc",
    "STORAGE_AZURE_CONTAINER": "media",
    "STORAGE_AZURE_ACCESS_KEY": "a2V5",
    "STORAGE_AZURE_ENDPOINT_URL": "http://127.0.0.1:9/acc",
}


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        ({**GCS, "STORAGE_GCS_PREFIX": "s"}, {**GCS, "STORAGE_GCS_PREFIX": "s/x"}),
        ({**GCS, "STORAGE_GCS_PREFIX": "/"}, {**GCS, "STORAGE_GCS_PREFIX": "o"}),
        (AZURE, {**AZURE, "STORAGE_AZURE_PREFIX": "/"}),
        (AZURE, {**AZURE, "STORAGE_AZURE_ENDPOINT_URL": "HTTP://127.0.0.1:9/acc/"}),
    ],
)
def test_migrate_of_gcs_or_azure_onto_the_same_storage_is_a_usage_error(
    tmp_path: Path, source: dict[str, str], dest: dict[str, str]
) -> None:
    # refused before a request is sent (the stores named here do not exist)
    to_env = write_env_file(tmp_path / "dest.env", dest)
    result = cli("migrate", "--to-env", to_env, "--delete-source", env=cli_env(**source))
    assert result.returncode == 2, result.stderr
    assert b"same storage" in result.stderr


def test_migrate_with_failed_objects_exits_1(tmp_path: Path) -> None:
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "src"))
    (tmp_path / "a").write_bytes(b"too big for the destination")
    cli("put", tmp_path / "a", "f/a", env=env)
    dest = {"STORAGE_LOCAL_PATH": str(tmp_path / "dst"), "STORAGE_LOCAL_MAX_SIZE_GB": "1e-8"}
    result = cli("migrate", "--to-env", write_env_file(tmp_path / "d.env", dest), "--json", env=env)
    assert result.returncode == 1
    assert list(json.loads(result.stdout)["failed"]) == ["f/a"]
    assert b"failed f/a: " in result.stderr


# rich alone missing: what `pip install 'file_storage[fastapi]' uvicorn` leaves (uvicorn
# brings click), where `put` on a terminal ended in a traceback at its progress bar
@pytest.mark.parametrize("missing", ["click", "rich"])
def test_python_m_without_the_cli_extra_says_what_to_install(missing: str) -> None:
    code = (
        f"import sys, runpy; sys.modules[{missing!r}] = None; sys.argv = ['file-storage', 'ls']; "
        "runpy.run_module('file_storage', run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        b"file-storage: the command line needs the cli extra: pip install 'file_storage[cli]'\n"
    )


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("file-storage")
    result = subprocess.run([script, "--help"], capture_output=True, timeout=60)
    assert result.returncode == 0
    assert b"Usage: file-storage" in result.stdout


def test_import_file_storage_loads_no_cli_library() -> None:
    code = "import file_storage, sys; print(*sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"click", "rich", "file_storage.cli"} & set(out)


def test_sigterm_at_the_rm_prompt_exits_1_and_deletes_nothing(tmp_path: Path) -> None:
    # SIGTERM outside the event loop killed the process (143) where the docs promise 1
    env = cli_env(STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    (tmp_path / "a").write_bytes(b"a")
    cli("put", tmp_path / "a", "keep/a", env=env)
    controller, terminal = os.openpty()  # a terminal on stdin: rm asks first
    with subprocess.Popen(
        command("rm", "--prefix", "keep"), env=env, stdin=terminal, stderr=subprocess.PIPE
    ) as process:
        os.close(terminal)
        assert process.stderr is not None
        shown = b""
        while b"Delete every object" not in shown:
            chunk = process.stderr.read1(1024)
            assert chunk, shown
            shown += chunk
        try:
            # a SIGTERM landing inside input() after its last check of signals but before
            # its read() blocks is only seen once the read returns (CPython's window: the
            # signal is not pending any more, so the read is not interrupted). A service
            # manager sends it again or kills; here it is sent again, a bounded number of
            # times, until the process ends
            for _ in range(60):
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = process.wait(timeout=1)
                    break
            else:
                raise AssertionError("SIGTERM never ended the prompt")
        finally:
            process.kill()  # never left behind (a no-op once it has exited)
    os.close(controller)
    assert code == 1
    assert cli("ls", env=env).stdout == b"keep/a\n"
