"""``file-storage expire``: lifecycle rules from the shell, run as a subprocess."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend
from tests.cli.helpers import cli, cli_env, s3_settings


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "local":
        return cli_env(STORAGE_TYPE="LOCAL", STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return cli_env(**s3_settings(endpoint, bucket))


def test_expire_sets_lists_and_removes_rules(env: dict[str, str]) -> None:
    assert cli("expire", "temp", "1", env=env).returncode == 0
    assert cli("expire", "sessions/recordings/", "30", env=env).returncode == 0
    listed = cli("expire", env=env)
    assert (listed.returncode, listed.stdout.decode().splitlines()) == (
        0,
        ["    30 days  sessions/recordings/", "     1 days  temp/"],
    )
    removed = cli("expire", "temp", "--off", "--json", env=env)
    assert (removed.returncode, json.loads(removed.stdout)) == (0, {"sessions/recordings/": 30})
    assert json.loads(cli("expire", "--json", env=env).stdout) == {"sessions/recordings/": 30}


@pytest.mark.parametrize(
    "args",
    [("temp",), ("temp", "0"), ("temp", "-3"), ("temp", "7", "--off"), ("--off",), ("temp", "x")],
)
def test_expire_usage_errors_exit_2_and_change_nothing(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    result = cli("expire", *args, env=env)
    assert result.returncode == 2, result.stderr
    assert json.loads(cli("expire", "--json", env=env).stdout) == {}


def test_expire_bad_prefix_is_a_usage_error_naming_the_operation(env: dict[str, str]) -> None:
    result = cli("expire", "a//b", "3", env=env)
    assert result.returncode == 2
    assert b"set_expiration" in result.stderr


def test_expire_rule_reaches_the_application_local(tmp_path: Path) -> None:
    env = cli_env(STORAGE_TYPE="LOCAL", STORAGE_LOCAL_PATH=str(tmp_path / "storage"))
    assert cli("expire", "temp", "2", env=env).returncode == 0

    async def rules() -> dict[str, int]:
        async with LocalStorageBackend(tmp_path / "storage") as backend:
            return await backend.get_expiration()

    assert asyncio.run(rules()) == {"temp/": 2}


@pytest.mark.s3
def test_expire_rule_lands_in_the_bucket_lifecycle(
    moto_endpoint: str, s3_bucket: str, raw: Any
) -> None:
    env = cli_env(**s3_settings(moto_endpoint, s3_bucket))
    assert cli("expire", "temp", "2", env=env).returncode == 0
    rules = raw.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert [(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in rules] == [
        ("storage/temp/", 2)
    ]
