"""obstore's exceptions become typed errors by cause, with no URL or server text kept."""

from __future__ import annotations

import pytest

from file_storage import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from file_storage.backends._obstore._errors import (
    is_precondition_error,
    is_range_error,
    map_obstore_error,
)

exceptions = pytest.importorskip("obstore.exceptions")

URL = "http://127.0.0.1:1/acct/c/k?sig=SECRET-SIGNATURE"


def answer(status: int, body: str = "") -> str:
    return (
        f"Generic error: Error performing GET {URL} in 1ms - Server returned non-2xx "
        f"status code: {status} X: {body}"
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (exceptions.GenericError(answer(503)), StorageUnavailableError),
        (exceptions.GenericError(answer(500)), StorageUnavailableError),
        (exceptions.GenericError(answer(429)), StorageUnavailableError),
        (exceptions.GenericError(answer(403)), StoragePermissionError),
        (exceptions.GenericError(answer(400)), StorageError),
        (exceptions.PermissionDeniedError(answer(403)), StoragePermissionError),
        (exceptions.UnauthenticatedError(answer(401)), StoragePermissionError),
        (exceptions.PreconditionError(answer(412)), PreconditionFailedError),
        (exceptions.AlreadyExistsError(answer(412)), PreconditionFailedError),
        (
            exceptions.AlreadyExistsError(answer(409, "<Code>BlobAlreadyExists</Code>")),
            PreconditionFailedError,
        ),
        # object_store's name for any 409: Azure's BlobArchived, LeaseIdMissing
        (exceptions.AlreadyExistsError(answer(409, "<Code>BlobArchived</Code>")), StorageError),
        (FileNotFoundError(answer(404)), ObjectNotFoundError),
        (FileNotFoundError(answer(404, "<Code>ContainerNotFound</Code>")), StorageConfigError),
        (exceptions.GenericError(answer(404, "<Code>NoSuchBucket</Code>")), StorageConfigError),
        (
            exceptions.GenericError(
                f"Error performing PUT {URL} - HTTP error: error sending request"
            ),
            StorageUnavailableError,
        ),
    ],
)
def test_obstore_errors_map_by_cause_without_the_url(exc: Exception, expected: type) -> None:
    mapped = map_obstore_error(exc, "Azure")
    assert type(mapped) is expected
    assert "SECRET-SIGNATURE" not in str(mapped)
    assert "127.0.0.1" not in str(mapped)


def test_foreign_exceptions_are_not_obstores() -> None:
    assert map_obstore_error(TypeError("a bug"), "GCS") is None
    assert map_obstore_error(FileNotFoundError(2, "No such file", "/tmp/x"), "GCS") is None


def test_a_416_is_a_range_error() -> None:
    assert is_range_error(exceptions.GenericError(answer(416)))
    assert not is_range_error(exceptions.GenericError(answer(400)))


def test_a_412_is_a_precondition_error() -> None:
    assert is_precondition_error(exceptions.PreconditionError(answer(412)))
    assert is_precondition_error(exceptions.GenericError(answer(412)))
    assert not is_precondition_error(exceptions.GenericError(answer(404)))
    assert not is_precondition_error(FileNotFoundError(answer(404)))
