"""The exception tree of file_storage.

```
StorageError
├── ObjectNotFoundError         also FileNotFoundError
├── InvalidKeyError             also ValueError
├── StorageQuotaExceededError   .used .limit .requested .prefix
├── StorageUnavailableError     network, timeout, 5xx after retries: worth retrying
├── StoragePermissionError      bad credentials, access denied
├── StorageConfigError          bad settings, missing bucket, missing extra
├── ObjectConflictError         the key is a folder, or lies under an object
├── PreconditionFailedError     a conditional write or pinned read: the condition did not hold
└── InvalidMetadataError        also ValueError: bad metadata name, or over 2 KiB in all
```

Every error carries ``operation`` and ``key`` and reads like
``load 'a/b.txt': object not found`` (a key over 1024 characters shows only its ends).
Messages never contain secrets. This module imports nothing from the package.
"""

from __future__ import annotations

__all__ = [
    "InvalidKeyError",
    "InvalidMetadataError",
    "ObjectConflictError",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "StorageConfigError",
    "StorageError",
    "StoragePermissionError",
    "StorageQuotaExceededError",
    "StorageUnavailableError",
]


class StorageError(Exception):
    """Base class of every error file_storage raises.

    Attributes:
        operation: the public operation that failed (``"save"``, ``"load"``, ...), or ``""``.
        key: the key it was working on, or ``None`` when there is none.
        detail: what went wrong, in words.
    """

    default_detail = "storage error"

    def __init__(self, detail: str | None = None, *, operation: str = "", key: str | None = None):
        self.detail = detail or self.default_detail
        self.operation = operation
        self.key = key
        super().__init__(self.detail)

    def __str__(self) -> str:
        where = " ".join(
            part
            for part in (self.operation, _shown_key(self.key) if self.key is not None else "")
            if part
        )
        return f"{where}: {self.detail}" if where else self.detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # keep operation/key across pickling (multiprocessing, some task queues)
        return (_rebuild, (type(self), self.detail, self.operation, self.key, self.__dict__))


# A key longer than this is invalid anyway (S3 takes 1024 UTF-8 bytes): the message shows
# its two ends, so that megabytes a user sent as a key are not repeated in every log line
_SHOWN_KEY_CHARS = 1024
_SHOWN_KEY_END = 100


def _shown_key(key: str) -> str:
    return _elided_repr(key, _SHOWN_KEY_CHARS, _SHOWN_KEY_END)


def _elided_repr(text: str, most: int, end: int) -> str:
    """``repr(text)``; over ``most`` characters, only its first and last ``end`` and its
    length: a message never repeats the megabytes a user sent."""
    if len(text) <= most:
        return repr(text)
    return f"{text[:end]!r}...{text[-end:]!r} ({len(text)} characters)"


def _rebuild(
    cls: type[StorageError], detail: str, operation: str, key: str | None, state: dict[str, object]
) -> StorageError:
    exc = cls.__new__(cls)
    StorageError.__init__(exc, detail, operation=operation, key=key)
    exc.__dict__.update(state)
    return exc


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object does not exist (also a ``FileNotFoundError``)."""

    default_detail = "object not found"

    def __str__(self) -> str:  # FileNotFoundError has its own __str__
        return StorageError.__str__(self)


class InvalidKeyError(StorageError, ValueError):
    """The key or prefix breaks the key grammar (also a ``ValueError``). Raised before any I/O."""

    default_detail = "invalid key"


class StorageQuotaExceededError(StorageError):
    """A write would push stored bytes over a quota; nothing was written.

    Attributes:
        used: bytes stored under the quota plus what *other* writes in flight hold,
            never this write's own bytes.
        limit: the quota in bytes.
        requested: this write's size when known up front (bytes, a local file, a copy),
            else the bytes a stream had sent when it crossed the limit.
        prefix: the folder the quota covers (``""`` for the whole backend).
    """

    def __init__(
        self,
        *,
        used: int,
        limit: int,
        requested: int,
        prefix: str = "",
        operation: str = "",
        key: str | None = None,
    ):
        self.used = used
        self.limit = limit
        self.requested = requested
        self.prefix = prefix
        scope = f"quota for {prefix}" if prefix else "storage quota"
        detail = (
            f"{scope} is {format_bytes(limit)}, {format_bytes(used)} used, "
            f"this write needs {format_bytes(requested)}"
        )
        super().__init__(detail, operation=operation, key=key)


class StorageUnavailableError(StorageError):
    """The store could not be reached or kept failing (network, timeout, 5xx after retries)."""

    default_detail = "storage unavailable"


class StoragePermissionError(StorageError):
    """Bad credentials or access denied."""

    default_detail = "permission denied"


class StorageConfigError(StorageError):
    """Bad settings, a missing bucket, or a missing optional dependency."""

    default_detail = "storage is misconfigured"


class ObjectConflictError(StorageError):
    """The key is a folder, or lies under an object: a key is an object or a folder, never both.

    Raised by the local and memory backends (S3 does not check). HTTP 409 in the FastAPI
    handlers.
    """

    default_detail = "a key cannot be both an object and a folder"


class PreconditionFailedError(StorageError):
    """A condition did not hold: a conditional write, or a read pinned to an ETag that is
    no longer current. HTTP 412 in the FastAPI handlers."""

    default_detail = "precondition failed"


class InvalidMetadataError(StorageError, ValueError):
    """A metadata name is not an HTTP token, or names and values together exceed 2 KiB of
    UTF-8 (S3's limit). Also a ``ValueError``; raised before any I/O. HTTP 400."""

    default_detail = "invalid metadata"


def format_bytes(n: int) -> str:
    """Human-readable size in decimal units (1 MB = 10^6 bytes), as quotas are set in GB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
