"""Error messages: operation and key, readable, picklable, no secrets by construction."""

from __future__ import annotations

import pickle

import pytest

from file_storage import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)


def test_message_names_operation_and_key() -> None:
    err = ObjectNotFoundError(operation="load", key="a/b.txt")
    assert str(err) == "load 'a/b.txt': object not found"
    assert repr(err) == "ObjectNotFoundError(\"load 'a/b.txt': object not found\")"


def test_message_without_operation_or_key() -> None:
    assert str(StorageConfigError("bucket 'b' does not exist")) == "bucket 'b' does not exist"


@pytest.mark.parametrize(
    "err",
    [
        ObjectNotFoundError(operation="load", key="k"),
        InvalidKeyError("invalid key: empty", operation="save", key=""),
        StorageUnavailableError("timed out", operation="save", key="k"),
        StoragePermissionError(operation="stat", key="k"),
        StorageQuotaExceededError(used=1, limit=2, requested=3, prefix="u/", operation="save"),
    ],
)
def test_errors_survive_pickling(err: StorageError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert (str(back), back.operation, back.key) == (str(err), err.operation, err.key)


def test_quota_error_carries_numbers() -> None:
    err = StorageQuotaExceededError(
        used=99_200_000,
        limit=100_000_000,
        requested=5_000_000,
        prefix="users/u1/",
        operation="save",
        key="users/u1/v.mp4",
    )
    assert (err.used, err.limit, err.requested, err.prefix) == (
        99_200_000,
        100_000_000,
        5_000_000,
        "users/u1/",
    )
    assert str(err) == (
        "save 'users/u1/v.mp4': quota for users/u1/ is 100.0 MB, 99.2 MB used, "
        "this write needs 5.0 MB"
    )
