"""obstore -> StorageError translation for the backends built on it.

obstore's exceptions carry the request URL and the server's answer in their text, and a
URL may hold a SAS token or signature: messages here carry only the HTTP status and the
server's error code, never obstore's text. The caller chains the original.
"""

from __future__ import annotations

import re
import sys

from file_storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

__all__ = [
    "is_discarded_block_list",
    "is_lost_commit",
    "is_precondition_error",
    "is_range_error",
    "is_refused_condition",
    "map_obstore_error",
]

_STATUS = re.compile(r"status code: (\d{3})")
# Azure's <Code>ContainerNotFound</Code>, GCS's XML <Code>NoSuchBucket</Code>
_CODE = re.compile(r"<Code>([A-Za-z0-9]{1,64})</Code>")
_MISSING_STORE = frozenset({"ContainerNotFound", "NoSuchBucket"})
# a GCS service-account key object_store could not open, parse or use: a setting to fix,
# found when the first request builds its credentials (object_store's gcp credential errors)
_BAD_SERVICE_ACCOUNT = (
    "Unable to open service account file",
    "Unable to decode service account file",
    "No RSA key found",
    "Invalid RSA key",
    "Unsupported key encoding",
    "CryptoProvider error",  # the key's PEM cannot be read or used to sign
)
# transport failures: obstore retried them and gave up
_TRANSPORT = ("error sending request", "HTTP error", "timed out", "Timeout", "connection")


def _status(text: str) -> tuple[int | None, str | None]:
    status = _STATUS.search(text)
    code = _CODE.search(text)
    return (int(status.group(1)) if status else None), (code.group(1) if code else None)


def is_range_error(exc: BaseException) -> bool:
    """True for a 416 (a range starting at or past the end of the object)."""
    text = str(exc)
    return _status(text)[0] == 416 or "InvalidRange" in text or "Range not satisfiable" in text


def is_precondition_error(exc: BaseException) -> bool:
    """True when the server refused a request's condition (412, obstore's
    ``PreconditionError``). Azure answers so to an ``If-Match`` read of a blob that does
    not exist at all, where GCS and S3 answer 404."""
    errors = sys.modules.get("obstore.exceptions")
    if errors is not None and isinstance(exc, errors.PreconditionError):
        return True
    return _status(str(exc))[0] == 412


def is_refused_condition(exc: BaseException) -> bool:
    """True when a conditional write was refused (412, or object_store's
    ``AlreadyExistsError``: its name for any 409, which answers a create-only write
    when an object is there)."""
    errors = sys.modules.get("obstore.exceptions")
    if errors is not None and isinstance(exc, errors.AlreadyExistsError):
        return True
    return is_precondition_error(exc)


def is_lost_commit(exc: BaseException) -> bool:
    """True when the last step of a GCS multipart upload found its upload gone
    (``NoSuchUpload``): object_store retries that step when its answer is lost, and the
    retry finds the upload completed by the first attempt (no one else knows its id)."""
    return _status(str(exc))[1] == "NoSuchUpload"


def is_discarded_block_list(exc: BaseException) -> bool:
    """True when Azure refused a block list (``InvalidBlockList``): either a retry of a
    commit whose answer was lost (Azurite) or another writer's commit of the same key,
    which discards the blocks not yet committed: whether this write landed is unknown."""
    return _status(str(exc))[1] == "InvalidBlockList"


def map_obstore_error(exc: Exception, kind: str) -> StorageError | None:
    """The StorageError for an obstore exception; ``None`` when ``exc`` is not obstore's."""
    errors = sys.modules.get("obstore.exceptions")
    if errors is None:
        return None
    text = str(exc)
    # obstore raises the builtin FileNotFoundError (and PermissionError) for those causes,
    # the others as its own classes; an OSError of ours (a local file) has no request in it
    ours = isinstance(exc, errors.BaseError)
    if not ours and not (isinstance(exc, OSError) and "Error performing" in text):
        return None
    status, code = _status(text)
    detail = " ".join(str(part) for part in (status, code) if part is not None)
    suffix = f" ({detail})" if detail else ""
    if code in _MISSING_STORE:
        return StorageConfigError(f"{kind}: the bucket or container does not exist{suffix}")
    if isinstance(exc, FileNotFoundError | errors.NotFoundError):
        return ObjectNotFoundError()
    if isinstance(exc, PermissionError):
        return StoragePermissionError(f"{kind}: access denied{suffix}")
    if isinstance(exc, errors.PreconditionError | errors.NotModifiedError):
        return PreconditionFailedError("the object changed since that ETag")
    if isinstance(exc, errors.AlreadyExistsError):
        if status == 409 and code != "BlobAlreadyExists":
            # object_store names every 409 so, but only a create-only write refused is
            # a condition that did not hold: Azure's 409 to a read of an archived blob
            # (BlobArchived) or a write of a leased one (LeaseIdMissing) is the store's
            # conflict, a StorageError as S3's 409 is
            return StorageError(f"{kind} refused the request (conflict){suffix}")
        return PreconditionFailedError("an object exists at this key")
    if isinstance(exc, errors.PermissionDeniedError | errors.UnauthenticatedError):
        return StoragePermissionError(f"{kind}: access denied{suffix}")
    if isinstance(exc, errors.InvalidPathError):
        return InvalidKeyError("not a valid object name")
    if isinstance(exc, errors.UnknownConfigurationKeyError):
        return StorageConfigError(f"{kind}: unknown configuration key")
    if status in (401, 403):
        return StoragePermissionError(f"{kind}: access denied{suffix}")
    if status == 404:
        return ObjectNotFoundError()
    if status == 412:
        return PreconditionFailedError("the object changed since that ETag")
    if status is not None and (status >= 500 or status in (408, 429)):
        return StorageUnavailableError(f"{kind} unavailable{suffix}")
    if status is None and any(words in text for words in _BAD_SERVICE_ACCOUNT):
        return StorageConfigError(
            f"{kind}: the service account key cannot be used (STORAGE_GCS_SERVICE_ACCOUNT)"
        )
    if status is None and any(word in text for word in _TRANSPORT):
        return StorageUnavailableError(f"{kind} unavailable (no answer)")
    return StorageError(f"{kind} request failed{suffix}")
