"""botocore/aiohttp -> StorageError translation for the S3 backend.

botocore and aiohttp are looked up in ``sys.modules`` instead of imported: an exception
can only come from them once they are loaded, and this module must not load them.
Messages carry the S3 error code and HTTP status, never S3's message text, a URL or a
credential; the original exception is chained by the caller. An error that outlived
botocore's retries says how many attempts were made: "S3 unavailable after 5 attempts
(503 SlowDown)".
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any

from file_storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

__all__ = [
    "batch_delete_error",
    "condition_error",
    "error_code",
    "is_outage",
    "map_s3_error",
]

# set on a network exception by the client's "needs-retry" hook (_s3_config.instrument)
ATTEMPTS_ATTR = "_file_storage_attempts"

NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
DENIED = frozenset(
    {
        "403",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
    }
)
# worth retrying later: botocore already retried these max_attempts times
TRANSIENT = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
# the server computed another checksum than the one sent: the bytes were damaged on
# the way, so the write did not happen and a retry is the cure
CORRUPTED = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"})
NO_CREDENTIALS = (
    "no credentials found: set STORAGE_S3_ACCESS_KEY_ID and STORAGE_S3_SECRET_ACCESS_KEY, "
    "or configure the standard AWS credential chain"
)


def _botocore_exceptions() -> Any:
    """botocore.exceptions if botocore is loaded, else ``None``."""
    return sys.modules.get("botocore.exceptions")


def _obstore_errors() -> Any:
    """The obstore translation once obstore is loaded (only then can it have raised)."""
    if "obstore.exceptions" not in sys.modules:
        return None
    from file_storage.backends.s3 import _obstore_errors

    return _obstore_errors


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` or an obstore error, else ``None``."""
    if (obstore := _obstore_errors()) is not None and (found := obstore.code(exc)) is not None:
        return str(found)
    errors = _botocore_exceptions()
    if errors is None or not isinstance(exc, errors.ClientError):
        return None
    code = exc.response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _after(attempts: object) -> str:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        return ""
    return f" after {attempts} attempt{'s' if attempts != 1 else ''}"


def _retries(response: dict[str, Any]) -> object:
    retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
    return retries + 1 if isinstance(retries, int) else None


def _map_client_error(exc: Any, bucket: str) -> StorageError:
    response: dict[str, Any] = exc.response
    code = str(response.get("Error", {}).get("Code", "Unknown"))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return map_answer(code, status, _retries(response), bucket)


def map_answer(code: str, status: object, attempts: object, bucket: str) -> StorageError:
    """The error for an S3 error answer (code and HTTP status), whatever client got it."""
    http = f"HTTP {status}" if status else "no HTTP status"
    if code in NOT_FOUND:
        return ObjectNotFoundError()
    if code in ("PreconditionFailed", "412") or status == 412:
        # an IfMatch that no longer holds: the object was replaced since that ETag
        return PreconditionFailedError(f"the object changed since that ETag ({code}, {http})")
    if code == "NoSuchBucket":
        return StorageConfigError(f"bucket {bucket!r} does not exist")
    if code in DENIED or status == 403:
        return StoragePermissionError(f"access denied by S3 ({code}, {http})")
    if code in CORRUPTED:
        return StorageUnavailableError(
            f"checksum mismatch: S3 rejected damaged data ({code}, {http}); nothing was written"
        )
    # a HEAD's answer has no body: 429 (throttled) and 408 (timeout) are told by status
    if code in TRANSIENT or status in (408, 429) or (isinstance(status, int) and status >= 500):
        what = f"{status} {code}" if status else code
        return StorageUnavailableError(f"S3 unavailable{_after(attempts)} ({what})")
    return StorageError(f"S3 error {code} ({http})")


def map_s3_error(exc: BaseException, *, bucket: str) -> StorageError | None:
    """Translate an SDK or network exception; ``None`` for anything else (bugs, local OSError)."""
    if isinstance(exc, asyncio.CancelledError | TypeError):
        return None
    if (obstore := _obstore_errors()) is not None:
        mapped: StorageError | None = obstore.map_error(exc, bucket)
        if mapped is not None:
            return mapped
    errors = _botocore_exceptions()
    if errors is not None:
        if isinstance(exc, errors.ClientError):
            return _map_client_error(exc, bucket)
        if isinstance(
            exc,
            errors.NoCredentialsError
            | errors.PartialCredentialsError
            | errors.CredentialRetrievalError,
        ):
            return StoragePermissionError(NO_CREDENTIALS)
        if isinstance(exc, errors.ChecksumError):
            return StorageUnavailableError(
                f"checksum mismatch: the data was damaged in transit ({type(exc).__name__})"
            )
        if undecodable(exc):
            return StorageError(
                "S3 answered with a header that is no UTF-8 (a Content-Type, Cache-Control, "
                "Content-Disposition or metadata value stored as other bytes by another tool)"
            )
        after = _after(getattr(exc, ATTEMPTS_ATTR, None))
        if isinstance(exc, errors.ReadTimeoutError | errors.ConnectTimeoutError):
            return StorageUnavailableError(f"S3 timed out{after} ({type(exc).__name__})")
        if isinstance(
            exc, errors.ConnectionError | errors.HTTPClientError | errors.IncompleteReadError
        ):
            return StorageUnavailableError(f"S3 unreachable{after} ({type(exc).__name__})")
        if isinstance(
            exc,
            errors.BaseEndpointResolverError
            | errors.InvalidRegionError
            | errors.InvalidDNSNameError
            | errors.InvalidConfigError
            | errors.UnsupportedS3ConfigurationError,
        ):
            return StorageConfigError(f"bad S3 client settings ({type(exc).__name__})")
        if isinstance(exc, errors.BotoCoreError):
            return StorageError(f"S3 client error ({type(exc).__name__})")
    # raised while a response body is read, after botocore returned (never retried)
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None and isinstance(exc, aiohttp.ClientError):
        return StorageUnavailableError(f"S3 connection failed ({type(exc).__name__})")
    if aiohttp is not None and type(exc) is RuntimeError and str(exc) == "Connection closed.":
        # aiohttp's StreamReader: the connection closed under a body being read (the
        # client closed by aclose meanwhile, or the server gone)
        return StorageUnavailableError("S3 connection closed while reading the body")
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return StorageUnavailableError(f"S3 timed out ({type(exc).__name__})")
    if isinstance(exc, ConnectionError):
        return StorageUnavailableError(f"S3 connection failed ({type(exc).__name__})")
    return None


def undecodable(exc: BaseException | None) -> bool:
    """aiobotocore could not decode the answer's headers as UTF-8 (it raises that as
    botocore's ``HTTPClientError``, which is otherwise a network error)."""
    errors = _botocore_exceptions()
    return (
        errors is not None
        and isinstance(exc, errors.HTTPClientError)
        and isinstance(getattr(exc, "kwargs", {}).get("error"), UnicodeDecodeError)
    )


def is_outage(exc: BaseException) -> bool:
    """True for an SDK or network error saying S3 could not be reached or kept failing
    (what the fallback spool absorbs); never for a local error or one of ours."""
    if isinstance(exc, StorageError):
        return False
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
        return False
    return isinstance(map_s3_error(exc, bucket=""), StorageUnavailableError)


def batch_delete_error(errors: list[dict[str, Any]], total: int) -> tuple[StorageError, str]:
    """The error for the keys DeleteObjects reported as not deleted, and the S3 key it
    names (one refused for the reason that decides the class).

    Keys refused for different reasons are classed by the one that decides what the
    caller does next, whatever order S3 lists them in: a key denied (retrying will not
    help), else another refusal, else (every key only throttled or failing) unavailable.
    """
    codes = [str(error.get("Code")) for error in errors]
    counts = Counter(codes)
    reasons = ", ".join(f"{code} x{n}" if n > 1 else code for code, n in counts.items())
    detail = f"{len(errors)} of {total} keys not deleted ({reasons})"
    worst = min(range(len(codes)), key=lambda i: _refusal_rank(codes[i]))
    key = str(errors[worst].get("Key", ""))
    code = codes[worst]
    if code in DENIED:
        return StoragePermissionError(f"access denied: {detail}"), key
    if code in TRANSIENT:
        return StorageUnavailableError(detail), key
    return StorageError(detail), key


def _refusal_rank(code: str) -> int:
    return 0 if code in DENIED else 2 if code in TRANSIENT else 1


def condition_error(exc: BaseException, create_only: bool) -> PreconditionFailedError | None:
    """The error of a conditional write S3 refused (``None``: another failure).

    412: the condition did not hold. 409 ConditionalRequestConflict: a concurrent write of
    the key won the race (AWS, "Conditional writes"). 404 on ``If-Match``: nothing to match.
    """
    code = error_code(exc)
    if code is None:
        return None
    # botocore's errors carry the answer; the obstore transport's only their code
    response = getattr(exc, "response", None)
    status = (response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("PreconditionFailed", "412") or status == 412:
        if create_only:
            return PreconditionFailedError("an object exists at this key (overwrite=False)")
        return PreconditionFailedError("the object is not the version if_match names")
    if code == "ConditionalRequestConflict" or status == 409:
        return PreconditionFailedError("a concurrent write of this key won (S3 409)")
    if code in NOT_FOUND and not create_only:
        return PreconditionFailedError("no object at this key for if_match")
    return None
