"""obstore -> StorageError translation for the S3 backend's obstore transport.

obstore raises one class per kind (not found, precondition, permission, ...) and a
``GenericError`` for the rest, whose message holds the HTTP status and S3's XML error
answer. The S3 error code and status are read from it and translated by the same table as
aiobotocore's (:func:`_errors.map_answer`); the message of the result never carries
obstore's text, which includes request URLs.
"""

from __future__ import annotations

import re
import sys

from file_storage.backends.s3._errors import NO_CREDENTIALS, map_answer
from file_storage.backends.s3._obstore import ORIGIN_ATTR
from file_storage.errors import (
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

__all__ = ["code", "map_error", "retries"]

_CODE = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>")
_STATUS = re.compile(r"status code: (\d{3})")
_RETRIES = re.compile(r"after (\d+) retries")
# what the reqwest / hyper errors under a GenericError say when the network failed
_TIMEOUT = ("timed out", "TimedOut", "deadline has elapsed")
_NETWORK = ("error sending request", "connection", "Connection", "dns error", "hyper")


def _errors() -> object | None:
    return sys.modules.get("obstore.exceptions")


def _class_code(exc: BaseException) -> str | None:
    name = type(exc).__name__
    return {
        "NotFoundError": "NoSuchKey",
        "FileNotFoundError": "NoSuchKey",
        "PreconditionError": "PreconditionFailed",
        "AlreadyExistsError": "PreconditionFailed",
        "PermissionDeniedError": "AccessDenied",
        "UnauthenticatedError": "InvalidAccessKeyId",
    }.get(name)


def _is_obstore(exc: BaseException) -> bool:
    if getattr(exc, ORIGIN_ATTR, False) and not isinstance(exc, TypeError):
        return True  # raised by an obstore call (a not-found is a builtin FileNotFoundError)
    base = getattr(_errors(), "BaseError", None)
    return base is not None and isinstance(exc, base)


def code(exc: BaseException) -> str | None:
    """The S3 error code of an obstore error (from S3's answer, else from its class)."""
    if not _is_obstore(exc):
        return None
    if (found := _CODE.search(str(exc))) is not None:
        return found.group(1)
    if (named := _class_code(exc)) is not None:
        return named
    # an answer without a body (to a HEAD): its status, the code botocore gives it too
    status = _STATUS.search(str(exc))
    return status.group(1) if status is not None else None


def retries(exc: BaseException) -> int | None:
    """How often object_store retried the request that failed with ``exc`` (it retries a
    5xx answer even to a conditional write); ``None``: no obstore error, or not said."""
    if not _is_obstore(exc):
        return None
    found = _RETRIES.search(str(exc))
    return int(found.group(1)) if found is not None else None


def map_error(exc: BaseException, bucket: str) -> StorageError | None:
    """Translate an obstore error; ``None`` for anything else."""
    if not _is_obstore(exc):
        return None
    text = str(exc)
    name = type(exc).__name__
    found = _CODE.search(text)
    status_match = _STATUS.search(text)
    status = int(status_match.group(1)) if status_match else None
    retries = _RETRIES.search(text)
    attempts = int(retries.group(1)) + 1 if retries else None
    # object_store names every 409 AlreadyExistsError: only a conditional write's is a
    # condition that failed (told by the write itself, _errors.condition_error); any
    # other (OperationAborted) is S3's code, as aiobotocore's client gives it
    conflict = name == "AlreadyExistsError" and status == 409
    if name in ("PreconditionError", "AlreadyExistsError") and not conflict:
        if name == "AlreadyExistsError":
            return PreconditionFailedError("the object already exists")
        return PreconditionFailedError(f"the object changed since that ETag ({name})")
    if found is not None or status is not None:
        fallback = str(status) if conflict else (_class_code(exc) or str(status))
        s3_code = found.group(1) if found else fallback
        return map_answer(s3_code, status, attempts, bucket)
    if (s3_code := _class_code(exc)) is not None:
        return map_answer(s3_code, status, attempts, bucket)
    if name == "UnknownConfigurationKeyError":
        return StorageConfigError(f"bad S3 client settings ({name})")
    if "credential" in text.lower():
        return StoragePermissionError(NO_CREDENTIALS)
    after = "" if attempts is None else f" after {attempts} attempts"
    if any(word in text for word in _TIMEOUT):
        return StorageUnavailableError(f"S3 timed out{after} ({name})")
    if any(word in text for word in _NETWORK):
        return StorageUnavailableError(f"S3 unreachable{after} ({name})")
    return StorageError(f"S3 client error ({name})")
