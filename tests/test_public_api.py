"""The public surface (docs/reference.md): names, identities, and a light import."""

from __future__ import annotations

import subprocess
import sys

import file_storage
import file_storage.backends.base as base
from file_storage import errors

API_NAMES = {
    "StorageBackend",
    "LocalStorageBackend",
    "S3StorageBackend",
    "MemoryStorageBackend",
    "GCSStorageBackend",
    "AzureStorageBackend",
    "ObjectInfo",
    "StoragePathBuilder",
    "StorageSettings",
    "create_storage_backend",
    "get_storage_backend",
    "close_storage_backend",
    "StorageError",
    "ObjectNotFoundError",
    "InvalidKeyError",
    "StorageQuotaExceededError",
    "StorageUnavailableError",
    "StoragePermissionError",
    "StorageConfigError",
}


def test_all_is_sorted_and_complete() -> None:
    assert file_storage.__all__ == sorted(file_storage.__all__)
    assert set(file_storage.__all__) >= API_NAMES
    for name in file_storage.__all__:
        assert hasattr(file_storage, name)


def test_module_paths_of_existing_applications_work() -> None:
    from file_storage.backends.base import StorageBackend, StorageQuotaExceededError
    from file_storage.backends.local import LocalStorageBackend
    from file_storage.backends.s3 import S3StorageBackend
    from file_storage.factory import create_storage_backend, get_storage_backend
    from file_storage.path_builder import StoragePathBuilder

    assert StorageBackend is file_storage.StorageBackend
    assert StorageQuotaExceededError is file_storage.StorageQuotaExceededError
    assert LocalStorageBackend is file_storage.LocalStorageBackend
    assert S3StorageBackend is file_storage.S3StorageBackend
    assert create_storage_backend is file_storage.create_storage_backend
    assert get_storage_backend is file_storage.get_storage_backend
    assert StoragePathBuilder is file_storage.StoragePathBuilder


def test_errors_are_one_tree_re_exported_from_base() -> None:
    assert base.StorageError is file_storage.StorageError is errors.StorageError
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.StorageError)
        assert getattr(base, name) is cls
    assert issubclass(errors.ObjectNotFoundError, FileNotFoundError)
    assert issubclass(errors.InvalidKeyError, ValueError)


def test_import_is_light_in_a_fresh_interpreter() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import file_storage, sys; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"aioboto3", "aiobotocore", "botocore", "boto3", "fastapi", "starlette"}
    # the GCS and Azure backends import obstore (and GCS signing cryptography) on first use
    assert not (heavy | {"obstore", "cryptography"}) & set(out)
