"""StorageSettings: STORAGE_* variables, .env, defaults, and errors that never echo values."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from file_storage import StorageConfigError, StorageSettings, create_storage_backend
from file_storage.settings import (
    LocalSettings,
    QuotaSettings,
    S3Settings,
)

# looks like a credential; must never show up in any message, repr or log line
SECRET = "sEcReT-0123456789-abcdefghij-NEVER-PRINT"
SIGNING_KEY = "k" * 24 + SECRET
MARK = "BADVALUE"  # put in bad values: must never be echoed


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> StorageSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return StorageSettings()


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> StorageConfigError:
    with pytest.raises(StorageConfigError) as info:
        settings_from(monkeypatch, **env)
    return info.value


# ------------------------------------------------------------------ defaults and types


def test_defaults() -> None:
    settings = StorageSettings()
    assert settings.type == "LOCAL"
    assert settings.local == LocalSettings(
        path=Path("./storage"), max_size_gb=None, base_url=None, signing_key=None
    )
    assert settings.local.max_size_bytes is None
    s3 = settings.s3
    assert (s3.bucket, s3.prefix, s3.region) == (None, "storage", "us-east-1")
    assert (s3.access_key_id, s3.secret_access_key, s3.session_token) == (None, None, None)
    assert (s3.endpoint_url, s3.public_endpoint_url, s3.addressing_style) == (None, None, "auto")
    assert s3.max_size_gb is None
    assert s3.max_size_bytes is None
    assert (s3.multipart_threshold_mb, s3.multipart_chunk_mb) == (16, 8)
    assert (s3.multipart_threshold_bytes, s3.multipart_chunk_bytes) == (16 * 2**20, 8 * 2**20)
    assert s3.max_concurrency == 8
    assert (s3.sse, s3.sse_kms_key_id) == (None, None)
    assert (s3.max_attempts, s3.retry_mode) == (5, "standard")
    assert (s3.connect_timeout, s3.read_timeout) == (10.0, 60.0)
    assert s3.max_pool_connections is None
    assert s3.fallback_path is None
    assert settings.quota == QuotaSettings(refresh_seconds=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("LOCAL", "LOCAL"),
        ("local", "LOCAL"),
        ("Local", "LOCAL"),
        ("MEMORY", "MEMORY"),
        ("memory", "MEMORY"),
        ("mEmOrY", "MEMORY"),
        ("S3", "S3"),
        ("s3", "S3"),
        (" s3 ", "S3"),
    ],
)
def test_storage_type_accepts_any_case(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    settings = settings_from(monkeypatch, STORAGE_TYPE=value, STORAGE_S3_BUCKET="media")
    assert settings.type == expected


def test_settings_can_be_built_in_code() -> None:
    settings = StorageSettings(type="s3", s3={"bucket": "bk"})
    assert settings.type == "S3"
    assert settings.s3.bucket == "bk"


def test_settings_can_be_built_from_models_in_code() -> None:
    settings = StorageSettings(type="S3", s3=S3Settings(bucket="bk", prefix="app"))
    assert (settings.s3.bucket, settings.s3.prefix) == ("bk", "app")


def test_code_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "S3")
    assert StorageSettings(type="memory").type == "MEMORY"


@pytest.mark.parametrize(
    ("env", "section", "field", "expected"),
    [
        ({"STORAGE_LOCAL_PATH": "/srv/files"}, "local", "path", Path("/srv/files")),
        ({"STORAGE_LOCAL_MAX_SIZE_GB": "0.5"}, "local", "max_size_gb", 0.5),
        (
            {
                "STORAGE_LOCAL_BASE_URL": "https://app.example.com/files/",
                "STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY,
            },
            "local",
            "base_url",
            "https://app.example.com/files",
        ),
        (
            {"STORAGE_LOCAL_BASE_URL": "/files", "STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY},
            "local",
            "base_url",
            "/files",
        ),
        ({"STORAGE_S3_BUCKET": "media"}, "s3", "bucket", "media"),
        ({"STORAGE_S3_BUCKET": "Legacy_Bucket"}, "s3", "bucket", "Legacy_Bucket"),
        ({"STORAGE_S3_PREFIX": "apps/prod"}, "s3", "prefix", "apps/prod"),
        ({"STORAGE_S3_REGION": "eu-west-3"}, "s3", "region", "eu-west-3"),
        (
            {"STORAGE_S3_ENDPOINT_URL": "http://127.0.0.1:9000/"},
            "s3",
            "endpoint_url",
            "http://127.0.0.1:9000",
        ),
        (
            {"STORAGE_S3_PUBLIC_ENDPOINT_URL": "https://files.example.com"},
            "s3",
            "public_endpoint_url",
            "https://files.example.com",
        ),
        ({"STORAGE_S3_ADDRESSING_STYLE": "PATH"}, "s3", "addressing_style", "path"),
        ({"STORAGE_S3_ADDRESSING_STYLE": "virtual"}, "s3", "addressing_style", "virtual"),
        ({"STORAGE_S3_MAX_SIZE_GB": "1.5"}, "s3", "max_size_gb", 1.5),
        ({"STORAGE_S3_MULTIPART_THRESHOLD_MB": "64"}, "s3", "multipart_threshold_mb", 64),
        ({"STORAGE_S3_MULTIPART_CHUNK_MB": "5"}, "s3", "multipart_chunk_mb", 5),
        ({"STORAGE_S3_MAX_CONCURRENCY": "64"}, "s3", "max_concurrency", 64),
        ({"STORAGE_S3_MAX_CONCURRENCY": "1"}, "s3", "max_concurrency", 1),
        ({"STORAGE_S3_SSE": "aes256"}, "s3", "sse", "AES256"),
        (
            {"STORAGE_S3_SSE": "AWS:KMS", "STORAGE_S3_SSE_KMS_KEY_ID": "alias/media"},
            "s3",
            "sse_kms_key_id",
            "alias/media",
        ),
        ({"STORAGE_S3_MAX_ATTEMPTS": "1"}, "s3", "max_attempts", 1),
        ({"STORAGE_S3_RETRY_MODE": "Adaptive"}, "s3", "retry_mode", "adaptive"),
        ({"STORAGE_S3_CONNECT_TIMEOUT": "2.5"}, "s3", "connect_timeout", 2.5),
        ({"STORAGE_S3_READ_TIMEOUT": "120"}, "s3", "read_timeout", 120.0),
        ({"STORAGE_S3_MAX_POOL_CONNECTIONS": "50"}, "s3", "max_pool_connections", 50),
        (
            {"STORAGE_S3_FALLBACK_PATH": "/var/spool/st"},
            "s3",
            "fallback_path",
            Path("/var/spool/st"),
        ),
        ({"STORAGE_QUOTA_REFRESH_SECONDS": "30"}, "quota", "refresh_seconds", 30.0),
        ({"STORAGE_EXPIRE_INTERVAL_SECONDS": "600"}, "expire", "interval_seconds", 600.0),
        ({"storage_s3_region": "ap-south-1"}, "s3", "region", "ap-south-1"),
    ],
)
def test_each_variable_sets_its_field(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], section: str, field: str, expected: object
) -> None:
    settings = settings_from(monkeypatch, **env)
    assert getattr(getattr(settings, section), field) == expected


def test_credentials_are_secret_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch,
        STORAGE_S3_ACCESS_KEY_ID="AKIAFAKE",
        STORAGE_S3_SECRET_ACCESS_KEY=SECRET,
        STORAGE_S3_SESSION_TOKEN="token-" + SECRET,
    )
    s3 = settings.s3
    assert isinstance(s3.secret_access_key, SecretStr)
    assert s3.secret_access_key.get_secret_value() == SECRET
    assert s3.access_key_id is not None
    assert s3.access_key_id.get_secret_value() == "AKIAFAKE"
    assert s3.session_token is not None
    assert s3.session_token.get_secret_value() == "token-" + SECRET


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch, STORAGE_S3_ENDPOINT_URL="", STORAGE_S3_MAX_CONCURRENCY="", STORAGE_TYPE=""
    )
    assert (settings.type, settings.s3.endpoint_url, settings.s3.max_concurrency) == (
        "LOCAL",
        None,
        8,
    )


def test_unknown_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, STORAGE_S3_NOT_A_SETTING="x", STORAGE_OTHER="y")
    assert settings.type == "LOCAL"


# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("gb", "expected"),
    [("0.5", 500_000_000), ("1", 1_000_000_000), ("2.01", 2_010_000_000), ("0.000001", 1_000)],
)
def test_fractional_gigabytes_become_exact_bytes(
    monkeypatch: pytest.MonkeyPatch, gb: str, expected: int
) -> None:
    settings = settings_from(monkeypatch, STORAGE_LOCAL_MAX_SIZE_GB=gb, STORAGE_S3_MAX_SIZE_GB=gb)
    assert settings.local.max_size_bytes == expected
    assert settings.s3.max_size_bytes == expected


def test_multipart_megabytes_are_mebibytes(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch, STORAGE_S3_MULTIPART_THRESHOLD_MB="100", STORAGE_S3_MULTIPART_CHUNK_MB="10"
    )
    assert settings.s3.multipart_threshold_bytes == 100 * 1024 * 1024
    assert settings.s3.multipart_chunk_bytes == 10 * 1024 * 1024


# ------------------------------------------------------------------ .env


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\n"
        "DATABASE_URL=postgres://elsewhere\n"
        "STORAGE_TYPE=s3\n"
        "STORAGE_S3_BUCKET=from-dotenv\n"
        "STORAGE_S3_MAX_CONCURRENCY=16\n"
        f"STORAGE_S3_ACCESS_KEY_ID=AKIAFAKE\nSTORAGE_S3_SECRET_ACCESS_KEY={SECRET}\n"
        "STORAGE_LOCAL_MAX_SIZE_GB=0.25\n"
    )
    settings = StorageSettings()
    assert settings.type == "S3"
    assert settings.s3.bucket == "from-dotenv"
    assert settings.s3.max_concurrency == 16
    assert settings.local.max_size_bytes == 250_000_000
    assert settings.s3.secret_access_key is not None
    assert settings.s3.secret_access_key.get_secret_value() == SECRET


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STORAGE_TYPE=MEMORY\nSTORAGE_S3_REGION=eu-west-1\n")
    monkeypatch.setenv("STORAGE_TYPE", "local")
    settings = StorageSettings()
    assert (settings.type, settings.s3.region) == ("LOCAL", "eu-west-1")


@pytest.mark.parametrize("name", ["STORAGE_LOCAL_PATH", "STORAGE_S3_FALLBACK_PATH"])
def test_a_folder_with_a_nul_in_dotenv_names_the_variable(tmp_path: Path, name: str) -> None:
    # a NUL cannot be in an environment variable, but can be in .env
    (tmp_path / ".env").write_text(f"{name}=a\x00{MARK}\n")
    with pytest.raises(StorageConfigError, match=name) as info:
        StorageSettings()
    assert MARK not in str(info.value)


def test_bad_value_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"STORAGE_S3_MAX_CONCURRENCY=many-{MARK}\n")
    with pytest.raises(StorageConfigError, match="STORAGE_S3_MAX_CONCURRENCY") as info:
        StorageSettings()
    assert MARK not in str(info.value)


@pytest.mark.parametrize("given", [False, True], ids=["dotenv", "env-file"])
def test_an_env_file_that_is_not_utf8_is_a_config_error_without_its_content(
    tmp_path: Path, given: bool
) -> None:
    # it raised UnicodeDecodeError, whose repr() (what error trackers record) holds the
    # whole file: every secret in it
    path = tmp_path / (".env" if not given else "app.env")
    path.write_bytes(
        b"STORAGE_TYPE=memory\n"
        + f"STORAGE_S3_SECRET_ACCESS_KEY={SECRET}\n".encode()
        + b"STORAGE_S3_REGION=\xe9u-west-1\n"  # Latin-1, not UTF-8
    )
    values: dict[str, Any] = {"_env_file": path} if given else {}
    with pytest.raises(StorageConfigError, match="UTF-8") as info:
        StorageSettings(**values)
    assert path.name in str(info.value)
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert SECRET not in shown
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STORAGE_TYPE": f"ftp-{MARK}"}, "STORAGE_TYPE"),
        ({"STORAGE_LOCAL_MAX_SIZE_GB": "0"}, "STORAGE_LOCAL_MAX_SIZE_GB"),
        ({"STORAGE_LOCAL_MAX_SIZE_GB": "-1"}, "STORAGE_LOCAL_MAX_SIZE_GB"),
        ({"STORAGE_LOCAL_MAX_SIZE_GB": "nan"}, "STORAGE_LOCAL_MAX_SIZE_GB"),
        ({"STORAGE_LOCAL_MAX_SIZE_GB": "inf"}, "STORAGE_LOCAL_MAX_SIZE_GB"),
        ({"STORAGE_LOCAL_MAX_SIZE_GB": f"lots-{MARK}"}, "STORAGE_LOCAL_MAX_SIZE_GB"),
        (
            {
                "STORAGE_LOCAL_BASE_URL": f"ftp://{MARK}.example/x",
                "STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY,
            },
            "STORAGE_LOCAL_BASE_URL",
        ),
        (
            {
                "STORAGE_LOCAL_BASE_URL": f"https://ex.com/a b{MARK}",
                "STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY,
            },
            "STORAGE_LOCAL_BASE_URL",
        ),
        (
            {"STORAGE_LOCAL_BASE_URL": "/files", "STORAGE_LOCAL_SIGNING_KEY": f"short-{MARK}"},
            "STORAGE_LOCAL_SIGNING_KEY",
        ),
        ({"STORAGE_LOCAL_BASE_URL": "/files"}, "STORAGE_LOCAL_SIGNING_KEY"),
        ({"STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY + MARK}, "STORAGE_LOCAL_BASE_URL"),
        ({"STORAGE_TYPE": "S3"}, "STORAGE_S3_BUCKET"),
        ({"STORAGE_S3_BUCKET": f"bad/{MARK}"}, "STORAGE_S3_BUCKET"),
        # values the settings let through and the backend then refused, naming no variable
        ({"STORAGE_S3_BUCKET": "b"}, "STORAGE_S3_BUCKET"),
        ({"STORAGE_S3_BUCKET": f"-{MARK}"}, "STORAGE_S3_BUCKET"),
        ({"STORAGE_S3_CONNECT_TIMEOUT": "1e9"}, "STORAGE_S3_CONNECT_TIMEOUT"),
        ({"STORAGE_S3_READ_TIMEOUT": "1e300"}, "STORAGE_S3_READ_TIMEOUT"),
        (
            {"STORAGE_S3_FALLBACK_PATH": "spool", "STORAGE_S3_FLUSH_INTERVAL_SECONDS": "1e12"},
            "STORAGE_S3_FLUSH_INTERVAL_SECONDS",
        ),
        ({"STORAGE_S3_PREFIX": f"/{MARK}"}, "STORAGE_S3_PREFIX"),
        ({"STORAGE_S3_PREFIX": f"{MARK}/"}, "STORAGE_S3_PREFIX"),
        ({"STORAGE_S3_PREFIX": f"a//{MARK}"}, "STORAGE_S3_PREFIX"),
        ({"STORAGE_S3_PREFIX": f"../{MARK}"}, "STORAGE_S3_PREFIX"),
        ({"STORAGE_S3_PREFIX": MARK * 20}, "STORAGE_S3_PREFIX"),
        ({"STORAGE_S3_REGION": f"us east {MARK}"}, "STORAGE_S3_REGION"),
        ({"STORAGE_S3_ENDPOINT_URL": MARK}, "STORAGE_S3_ENDPOINT_URL"),
        ({"STORAGE_S3_ENDPOINT_URL": f"ftp://{MARK}"}, "STORAGE_S3_ENDPOINT_URL"),
        ({"STORAGE_S3_ENDPOINT_URL": f"http://user:{MARK}@minio:9000"}, "STORAGE_S3_ENDPOINT_URL"),
        ({"STORAGE_S3_ENDPOINT_URL": f"http://minio:9000/?{MARK}"}, "STORAGE_S3_ENDPOINT_URL"),
        ({"STORAGE_S3_PUBLIC_ENDPOINT_URL": f"files-{MARK}"}, "STORAGE_S3_PUBLIC_ENDPOINT_URL"),
        ({"STORAGE_S3_ENDPOINT_URL": "http://minio:99999"}, "STORAGE_S3_ENDPOINT_URL"),
        ({"STORAGE_S3_ENDPOINT_URL": f"http://minio:{MARK}"}, "STORAGE_S3_ENDPOINT_URL"),
        ({"STORAGE_GCS_ENDPOINT_URL": f"http://gcs:{MARK}"}, "STORAGE_GCS_ENDPOINT_URL"),
        ({"STORAGE_AZURE_ENDPOINT_URL": "http://azurite:0/a"}, "STORAGE_AZURE_ENDPOINT_URL"),
        (
            {
                "STORAGE_LOCAL_BASE_URL": f"https://ex.com:{MARK}/files",
                "STORAGE_LOCAL_SIGNING_KEY": SIGNING_KEY,
            },
            "STORAGE_LOCAL_BASE_URL",
        ),
        ({"STORAGE_S3_ADDRESSING_STYLE": f"side-{MARK}"}, "STORAGE_S3_ADDRESSING_STYLE"),
        ({"STORAGE_S3_MAX_SIZE_GB": "0"}, "STORAGE_S3_MAX_SIZE_GB"),
        ({"STORAGE_S3_MULTIPART_THRESHOLD_MB": "0"}, "STORAGE_S3_MULTIPART_THRESHOLD_MB"),
        ({"STORAGE_S3_MULTIPART_THRESHOLD_MB": "5121"}, "STORAGE_S3_MULTIPART_THRESHOLD_MB"),
        ({"STORAGE_S3_MULTIPART_CHUNK_MB": "4"}, "STORAGE_S3_MULTIPART_CHUNK_MB"),
        ({"STORAGE_S3_MULTIPART_CHUNK_MB": "5.5"}, "STORAGE_S3_MULTIPART_CHUNK_MB"),
        ({"STORAGE_S3_MAX_CONCURRENCY": "0"}, "STORAGE_S3_MAX_CONCURRENCY"),
        ({"STORAGE_S3_MAX_CONCURRENCY": "65"}, "STORAGE_S3_MAX_CONCURRENCY"),
        ({"STORAGE_S3_SSE": f"rot13-{MARK}"}, "STORAGE_S3_SSE"),
        ({"STORAGE_S3_SSE_KMS_KEY_ID": f"arn-{MARK}"}, "STORAGE_S3_SSE_KMS_KEY_ID"),
        (
            {"STORAGE_S3_SSE": "AES256", "STORAGE_S3_SSE_KMS_KEY_ID": f"arn-{MARK}"},
            "STORAGE_S3_SSE_KMS_KEY_ID",
        ),
        ({"STORAGE_S3_MAX_ATTEMPTS": "0"}, "STORAGE_S3_MAX_ATTEMPTS"),
        ({"STORAGE_S3_RETRY_MODE": f"legacy-{MARK}"}, "STORAGE_S3_RETRY_MODE"),
        ({"STORAGE_S3_CONNECT_TIMEOUT": "0"}, "STORAGE_S3_CONNECT_TIMEOUT"),
        ({"STORAGE_S3_CONNECT_TIMEOUT": "-1"}, "STORAGE_S3_CONNECT_TIMEOUT"),
        ({"STORAGE_S3_READ_TIMEOUT": f"forever-{MARK}"}, "STORAGE_S3_READ_TIMEOUT"),
        ({"STORAGE_S3_MAX_POOL_CONNECTIONS": "0"}, "STORAGE_S3_MAX_POOL_CONNECTIONS"),
        ({"STORAGE_QUOTA_REFRESH_SECONDS": "0"}, "STORAGE_QUOTA_REFRESH_SECONDS"),
        ({"STORAGE_QUOTA_LEASE_SECONDS": "0.001"}, "STORAGE_QUOTA_LEASE_SECONDS"),
        ({"STORAGE_QUOTA_LEASE_SECONDS": "0.999"}, "STORAGE_QUOTA_LEASE_SECONDS"),
        # accepted, then refused by the Redis ledger naming no variable
        ({"STORAGE_QUOTA_REDIS_NAMESPACE": "   "}, "STORAGE_QUOTA_REDIS_NAMESPACE"),
        # a brace could name another ledger's keys, or spread one over Cluster slots
        ({"STORAGE_QUOTA_REDIS_NAMESPACE": f"app}}:{MARK}"}, "STORAGE_QUOTA_REDIS_NAMESPACE"),
        ({"STORAGE_QUOTA_REDIS_NAMESPACE": f"}}{MARK}"}, "STORAGE_QUOTA_REDIS_NAMESPACE"),
        ({"STORAGE_QUOTA_REFRESH_SECONDS": f"soon-{MARK}"}, "STORAGE_QUOTA_REFRESH_SECONDS"),
        ({"STORAGE_S3_ACCESS_KEY_ID": f"AKIA{MARK}"}, "STORAGE_S3_SECRET_ACCESS_KEY"),
        ({"STORAGE_S3_SECRET_ACCESS_KEY": f"{SECRET}{MARK}"}, "STORAGE_S3_ACCESS_KEY_ID"),
        ({"STORAGE_S3_SESSION_TOKEN": f"{SECRET}{MARK}"}, "STORAGE_S3_SESSION_TOKEN"),
        # a secret file read with its line break: every request failed, as "unreachable"
        (
            {"STORAGE_S3_ACCESS_KEY_ID": "AKIAFAKE\n", "STORAGE_S3_SECRET_ACCESS_KEY": SECRET},
            "STORAGE_S3_ACCESS_KEY_ID",
        ),
        (
            {"STORAGE_S3_ACCESS_KEY_ID": "AKIAFAKE", "STORAGE_S3_SECRET_ACCESS_KEY": f"{SECRET}\n"},
            "STORAGE_S3_SECRET_ACCESS_KEY",
        ),
        (
            {
                "STORAGE_S3_ACCESS_KEY_ID": "AKIAFAKE",
                "STORAGE_S3_SECRET_ACCESS_KEY": SECRET,
                "STORAGE_S3_SESSION_TOKEN": f"{SECRET} {MARK}",
            },
            "STORAGE_S3_SESSION_TOKEN",
        ),
        ({"STORAGE_S3": f'{{"bucket": "{MARK}"'}, "STORAGE_S3"),
    ],
)
def test_bad_value_names_the_variable_and_not_the_value(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    error = config_error(monkeypatch, **env)
    assert named in str(error)
    shown = "".join(traceback.format_exception(error)) + repr(error)
    assert MARK not in shown
    assert SECRET not in shown


def test_error_message_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, STORAGE_S3_MAX_CONCURRENCY="65")
    assert str(error) == "STORAGE_S3_MAX_CONCURRENCY: must be <= 64"


def test_a_lease_shorter_than_a_second_is_refused_saying_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # renewed every third of a lease, a 1 ms lease ran out under every write
    error = config_error(monkeypatch, STORAGE_QUOTA_LEASE_SECONDS="0.5")
    assert str(error) == "STORAGE_QUOTA_LEASE_SECONDS: must be >= 1"
    assert settings_from(monkeypatch, STORAGE_QUOTA_LEASE_SECONDS="1").quota.lease_seconds == 1


def test_missing_bucket_for_s3_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, STORAGE_TYPE="s3")
    assert str(error) == "STORAGE_S3_BUCKET: required when STORAGE_TYPE is S3"


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(
        monkeypatch,
        STORAGE_S3_MAX_CONCURRENCY="65",
        STORAGE_LOCAL_MAX_SIZE_GB="-1",
        STORAGE_QUOTA_REFRESH_SECONDS="0",
    )
    for name in (
        "STORAGE_S3_MAX_CONCURRENCY",
        "STORAGE_LOCAL_MAX_SIZE_GB",
        "STORAGE_QUOTA_REFRESH_SECONDS",
    ):
        assert name in str(error)


def test_error_keeps_no_pydantic_error_that_holds_the_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = config_error(monkeypatch, STORAGE_LOCAL_SIGNING_KEY="short-" + SECRET[:10])
    assert error.__cause__ is None
    assert error.__context__ is None


def test_bad_value_in_code_is_a_config_error() -> None:
    with pytest.raises(StorageConfigError, match="STORAGE_S3_MAX_CONCURRENCY"):
        StorageSettings(s3={"max_concurrency": 0})


def test_signing_key_shorter_than_32_characters_is_refused() -> None:
    with pytest.raises(StorageConfigError, match="at least 32 characters") as info:
        StorageSettings(local={"base_url": "/files", "signing_key": SECRET[:31]})
    assert SECRET[:31] not in "".join(traceback.format_exception(info.value))


UNRUN = "$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"


@pytest.mark.parametrize("line", [UNRUN, f'"{UNRUN}"', "`openssl rand -base64 48 | tr -d =`"])
def test_signing_key_that_is_a_shell_command_never_run_is_refused(
    tmp_path: Path, line: str
) -> None:
    # a .env file runs no command: the key would be the command's text, known to anyone
    (tmp_path / ".env").write_text(
        f"STORAGE_LOCAL_BASE_URL=http://127.0.0.1:8000/files\nSTORAGE_LOCAL_SIGNING_KEY={line}\n"
    )
    with pytest.raises(StorageConfigError, match="STORAGE_LOCAL_SIGNING_KEY: is a shell command"):
        StorageSettings()


def test_signing_key_argument_that_is_a_shell_command_never_run_is_refused() -> None:
    from file_storage import MemoryStorageBackend

    with pytest.raises(StorageConfigError, match="never run"):
        MemoryStorageBackend(base_url="/files", signing_key=UNRUN)


# ------------------------------------------------------------------ secrets stay hidden


@pytest.fixture
def secret_settings(monkeypatch: pytest.MonkeyPatch) -> StorageSettings:
    return settings_from(
        monkeypatch,
        STORAGE_S3_BUCKET="media",
        STORAGE_S3_ACCESS_KEY_ID="AKIA" + SECRET,
        STORAGE_S3_SECRET_ACCESS_KEY=SECRET,
        STORAGE_S3_SESSION_TOKEN="token" + SECRET,
        STORAGE_LOCAL_BASE_URL="https://app.example.com/files",
        STORAGE_LOCAL_SIGNING_KEY=SIGNING_KEY,
    )


def test_repr_and_str_hide_secrets(secret_settings: StorageSettings) -> None:
    for text in (repr(secret_settings), str(secret_settings), repr(secret_settings.s3)):
        assert SECRET not in text
        assert "**********" in text


def test_dumps_hide_secrets(secret_settings: StorageSettings) -> None:
    assert SECRET not in secret_settings.model_dump_json()
    assert SECRET not in str(secret_settings.model_dump())


def test_logs_hide_secrets(
    secret_settings: StorageSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("app").debug("storage settings: %s / %r", secret_settings, secret_settings)
    backend = create_storage_backend(secret_settings)
    logging.getLogger("app").debug("backend: %r", backend)
    assert caplog.records
    assert SECRET not in caplog.text


# ------------------------------------------------------------------ the bucket root


@pytest.mark.parametrize("value", ["", "/"])
def test_an_empty_or_slash_s3_prefix_selects_the_bucket_root(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    settings = settings_from(monkeypatch, STORAGE_S3_PREFIX=value)
    assert settings.s3.prefix == ""


@pytest.mark.parametrize("value", ["", "/"])
def test_an_empty_or_slash_s3_prefix_in_dotenv_selects_the_bucket_root(
    tmp_path: Path, value: str
) -> None:
    (tmp_path / ".env").write_text(f"STORAGE_S3_PREFIX={value}\nSTORAGE_S3_REGION=\n")
    settings = StorageSettings()
    assert (settings.s3.prefix, settings.s3.region) == ("", "us-east-1")


def test_an_unset_s3_prefix_is_still_storage() -> None:
    assert StorageSettings().s3.prefix == "storage"
