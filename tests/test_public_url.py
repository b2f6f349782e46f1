"""get_public_url: an unsigned URL under the configured base, each key segment encoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from file_storage import (
    InvalidKeyError,
    LocalStorageBackend,
    MemoryStorageBackend,
    S3StorageBackend,
    StorageBackend,
    StorageConfigError,
    StorageSettings,
    create_storage_backend,
)


def build(kind: str, base: str | None, tmp_path: Path) -> StorageBackend:
    if kind == "s3":  # nothing is sent: no server needed
        return S3StorageBackend("media", prefix="app", public_base_url=base)
    if kind == "local":
        return LocalStorageBackend(tmp_path, public_base_url=base)
    return MemoryStorageBackend(public_base_url=base)


KINDS = ["memory", "local", "s3"]


@pytest.mark.parametrize("kind", KINDS)
def test_public_url_encodes_each_segment(kind: str, tmp_path: Path) -> None:
    backend = build(kind, "https://cdn.example.com/media/", tmp_path)
    url = backend.get_public_url("users/u 1/Отпуск+2026 #1?.mp4")
    assert url == (
        "https://cdn.example.com/media/users/u%201/"
        "%D0%9E%D1%82%D0%BF%D1%83%D1%81%D0%BA%2B2026%20%231%3F.mp4"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_public_url_keeps_unreserved_characters(kind: str, tmp_path: Path) -> None:
    backend = build(kind, "/public", tmp_path)
    assert backend.get_public_url("a-b_c.d~e/f.txt") == "/public/a-b_c.d~e/f.txt"


@pytest.mark.parametrize(
    ("kind", "setting"),
    [
        ("memory", "STORAGE_LOCAL_PUBLIC_BASE_URL"),
        ("local", "STORAGE_LOCAL_PUBLIC_BASE_URL"),
        ("s3", "STORAGE_S3_PUBLIC_BASE_URL"),
    ],
)
def test_public_url_unset_names_the_variable(kind: str, setting: str, tmp_path: Path) -> None:
    with pytest.raises(StorageConfigError, match=setting):
        build(kind, None, tmp_path).get_public_url("a.txt")


@pytest.mark.parametrize("kind", KINDS)
def test_public_url_checks_the_key(kind: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        build(kind, "/public", tmp_path).get_public_url("../etc/passwd")


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_an_absolute_path_base_is_accepted_by_the_settings_as_by_the_constructor(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a route of the app that proxies the bucket, as the constructors and the local
    # settings accept: one rule for settings and constructors
    monkeypatch.setenv(f"STORAGE_{kind.upper()}_PUBLIC_BASE_URL", "/media/")
    section = getattr(StorageSettings(), kind)
    assert section.public_base_url == "/media"


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_a_relative_base_is_refused_by_the_settings_as_by_the_constructor(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"STORAGE_{kind.upper()}_PUBLIC_BASE_URL", "media")
    with pytest.raises(StorageConfigError, match=f"STORAGE_{kind.upper()}_PUBLIC_BASE_URL"):
        StorageSettings()


def test_an_s3_backend_from_the_settings_serves_under_an_absolute_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "s3")
    monkeypatch.setenv("STORAGE_S3_BUCKET", "media")
    monkeypatch.setenv("STORAGE_S3_PUBLIC_BASE_URL", "/media")
    backend = create_storage_backend()
    assert backend.get_public_url("a b.txt") == "/media/a%20b.txt"
