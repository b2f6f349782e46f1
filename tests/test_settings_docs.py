"""`.env.example` and docs/configuration.md list every variable the settings read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from file_storage import StorageConfigError, StorageSettings
from file_storage.settings import (
    AzureSettings,
    ExpireSettings,
    GCSSettings,
    LocalSettings,
    QuotaSettings,
    S3Settings,
)

ROOT = Path(__file__).resolve().parent.parent


def every_variable() -> set[str]:
    names = {"STORAGE_TYPE"}
    sections = (
        ("local", LocalSettings),
        ("s3", S3Settings),
        ("gcs", GCSSettings),
        ("azure", AzureSettings),
        ("quota", QuotaSettings),
        ("expire", ExpireSettings),
    )
    for section, model in sections:
        names |= {f"STORAGE_{section}_{field}".upper() for field in model.model_fields}
    return names


def test_env_example_lists_every_variable() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?(STORAGE_[A-Z0-9_]+)=", text, re.M))
    assert listed == every_variable()


def test_env_example_holds_the_defaults(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    assert StorageSettings() == StorageSettings(_env_file=None)


def test_env_example_commented_lines_are_valid(tmp_path: Path) -> None:
    text = (ROOT / ".env.example").read_text()
    uncommented = re.sub(r"^# (STORAGE_[A-Z0-9_]+=)", r"\1", text, flags=re.M)
    # the signing key's placeholder is refused as it is (too short): a key used as shipped
    # would be known to every reader of this file
    uncommented = uncommented.replace("SIGNING_KEY=...", "SIGNING_KEY=" + "k" * 48)
    (tmp_path / ".env").write_text(uncommented.replace("AKIA...", "AKIAFAKE").replace("=...", "=x"))
    settings = StorageSettings()
    assert settings.s3.bucket == "my-bucket"


def test_env_example_signing_key_used_as_shipped_is_refused(tmp_path: Path) -> None:
    # a placeholder long enough to pass would sign URLs with a key anyone can read here
    text = (ROOT / ".env.example").read_text()
    uncommented = re.sub(r"^# (STORAGE_LOCAL_(BASE_URL|SIGNING_KEY)=)", r"\1", text, flags=re.M)
    (tmp_path / ".env").write_text(uncommented)
    with pytest.raises(StorageConfigError, match="STORAGE_LOCAL_SIGNING_KEY"):
        StorageSettings()


def test_configuration_doc_lists_every_variable() -> None:
    # the page's table is generated when the site is built (scripts/docs_hooks.py)
    from tests.test_docs_site import _hooks

    text = _hooks().on_page_markdown((ROOT / "docs" / "configuration.md").read_text())
    documented = set(re.findall(r"^\| `(STORAGE_[A-Z0-9_]+)` \|", text, re.M))
    assert documented == every_variable()
