"""What the settings sections share: size units, URL, secret and prefix checks."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from pydantic import AfterValidator, ConfigDict, SecretStr

from file_storage._keys import validate_key
from file_storage.errors import InvalidKeyError, StorageConfigError

GB = 10**9  # quotas are decimal, like disk vendors and S3 billing
MAX_S3_PREFIX_BYTES = 128  # keeps most of S3's 1024-byte key limit for the keys themselves

# S3 bucket names, lenient: legacy us-east-1 names allow capitals and "_" (AWS, "General
# purpose bucket naming rules"), and some S3-compatible servers break today's rules; the
# settings and the backend's constructor accept exactly these
S3_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")
_REGION = re.compile(r"[A-Za-z0-9_-]+")
#: the longest duration setting, in seconds (about 31 years): past it, timers overflow
MAX_SECONDS = 1e9
#: the bounds of a quota lease in Redis, in seconds. It is renewed every third of itself
#: and must outlast a Redis round trip plus an event-loop stall (a GC pause, a blocking
#: call): shorter, every write's reservation and key lock run out under it. Longer than
#: a day, a killed process holds its bytes and keys for longer than anyone waits.
MIN_LEASE_SECONDS = 1
MAX_LEASE_SECONDS = 86400
MAX_NAMESPACE_CHARS = 200  # the Redis ledger's key prefix

SECTION = ConfigDict(hide_input_in_errors=True, extra="ignore")

logger = logging.getLogger("file_storage")
# the plain-text schemes, and the one that encrypts each
_ENCRYPTED = {"http": "https", "redis": "rediss"}


def gb_to_bytes(gb: float | None) -> int | None:
    # through Decimal: int(2.01 * 10**9) is 2009999999, one byte short
    return None if gb is None else int(Decimal(repr(gb)) * GB)


def check_http_url(value: str | None) -> str | None:
    """An absolute http(s) URL without credentials, query or fragment; trailing ``/`` dropped."""
    if value is None:
        return None
    check_url_chars(value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials (use the access key settings)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    try:
        port = parts.port
    except ValueError:  # not a number, or above 65535
        port = 0
    if port == 0:
        raise ValueError("must have a port between 1 and 65535, or none")
    return value.rstrip("/")


def check_base_url(value: str | None) -> str | None:
    """Where URLs are served from: an http(s) URL (see :func:`check_http_url`) or an
    absolute path on the application's own host, such as ``/files``."""
    if value is None or not value.startswith("/"):
        return check_http_url(value)
    check_url_chars(value)
    if value.startswith("//") or "?" in value or "#" in value or not value.strip("/"):
        raise ValueError("must be an http(s) URL or an absolute path such as /files")
    return value.rstrip("/")


def check_s3_region(value: str) -> str:
    if not _REGION.fullmatch(value):
        raise ValueError("must be a region name such as us-east-1")
    return value


def checked(name: str, check: Callable[[str], str | None], value: object) -> str | None:
    """``check`` of a constructor argument (``None`` passes): ``StorageConfigError`` naming it."""
    if value is None:
        return None
    problem = "must be a str"
    if isinstance(value, str):
        try:
            return check(value)
        except ValueError as exc:
            problem = str(exc)
    # raised outside the except block: the value (a URL's credentials) stays out of __context__
    raise StorageConfigError(f"{name}: {problem}")


def checked_url(name: str, value: object) -> str | None:
    """:func:`check_http_url` of a constructor argument: ``StorageConfigError`` naming it."""
    return checked(name, check_http_url, value)


def check_url_chars(value: str) -> None:
    # urlsplit silently drops tabs and newlines; a URL with them is a pasting accident
    if has_space_or_control(value):
        raise ValueError("must not contain spaces or control characters")


def check_secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


def check_credential(value: SecretStr | None) -> SecretStr | None:
    """A key or token: never empty, and no whitespace (a secret file read with its line
    break would fail every request, as if the server were unreachable or the key wrong)."""
    value = check_secret(value)
    if value is not None and has_space_or_control(value.get_secret_value()):
        raise ValueError("must not contain spaces, line breaks or control characters")
    return value


def has_space_or_control(text: str) -> bool:
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def check_folder(value: Path | None) -> Path | None:
    """A local folder: no NUL (possible in .env), which no file system call accepts."""
    if value is not None and "\x00" in str(value):
        raise ValueError("must not contain a NUL character")
    return value


def check_prefix(value: str) -> str:
    """A store prefix: ``""`` (the whole bucket or container) or a short key, no edge ``/``."""
    if value in ("", "/"):  # the whole bucket
        return ""
    if value.startswith("/") or value.endswith("/"):
        raise ValueError("must not start or end with '/'")
    if len(value.encode("utf-8", "replace")) > MAX_S3_PREFIX_BYTES:
        raise ValueError(f"must be at most {MAX_S3_PREFIX_BYTES} UTF-8 bytes")
    try:
        validate_key(value)
    except InvalidKeyError as exc:
        raise ValueError(f"must be a valid key ({exc.detail})") from None
    return value


# the field types the sections share, each with its check
#: a store prefix (see check_prefix)
StorePrefix = Annotated[str, AfterValidator(check_prefix)]
#: an http(s) URL or unset (see check_http_url)
HttpURL = Annotated[str | None, AfterValidator(check_http_url)]
#: where URLs are served from: an http(s) URL, an absolute path such as /files, or unset
BaseURL = Annotated[str | None, AfterValidator(check_base_url)]
#: a credential or unset, never empty
Secret = Annotated[SecretStr | None, AfterValidator(check_secret)]
#: a local folder or unset (see check_folder)
Folder = Annotated[Path | None, AfterValidator(check_folder)]
#: a key or token or unset: never empty, no whitespace (see check_credential)
Credential = Annotated[SecretStr | None, AfterValidator(check_credential)]


def is_loopback_server(host: str) -> bool:
    """``localhost`` or a loopback address (an IPv4-mapped one too): this machine's own
    sockets, one server however the name is spelled."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def is_loopback(host: str) -> bool:
    """A loopback server, or a sub-domain of ``localhost`` (RFC 6761): traffic stays on
    this machine. Sub-domains are not one server with ``localhost``: a proxy here routes
    each name to a server of its own, so :func:`is_loopback_server` leaves them out."""
    return host.lower().rstrip(".").endswith(".localhost") or is_loopback_server(host)


def has_password(url: str) -> bool:
    """A Redis URL carrying a password (``redis://:pw@host``, or ``?password=``)."""
    try:
        parts = urlsplit(url.strip())
        return bool(parts.password) or "password" in parse_qs(parts.query)
    except ValueError:  # malformed: refused elsewhere
        return False


def warn_in_clear(url: str | None, setting: str, what: str) -> None:
    """Log one WARNING when ``url`` is plain ``http://`` or ``redis://`` to a host that is
    not loopback: ``what`` crosses the network unencrypted. It names the setting and the
    host, never the URL (it may carry a password)."""
    if url is None:
        return
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:  # malformed: refused elsewhere
        return
    scheme = parts.scheme.lower()
    if scheme not in _ENCRYPTED or not host or is_loopback(host):
        return
    logger.warning(
        "%s is %s:// to %s, not a loopback host: %s cross the network in clear; use %s://",
        setting,
        scheme,
        host,
        what,
        _ENCRYPTED[scheme],
    )


def namespace_is_own(namespace: str) -> bool:
    """Whether the ledger's Redis keys, ``{<namespace>}:...``, are its own: ``}:`` inside
    would name the keys of another ledger on the same Redis (``{app}:lk:{app}:q:`` is the
    count of the namespace ``app}:lk:{app`` and the lock of the key ``{app}:q:`` in
    ``app``; without ``}:`` no two namespaces share a key), and ``}`` first leaves an
    empty Cluster hash tag, spreading one ledger's keys over slots where its scripts fail.
    Other braces are fine: the tag is then what lies before the first ``}``."""
    return not namespace.startswith("}") and "}:" not in namespace


def check_ledger_options(lease_seconds: object, namespace: object) -> None:
    """The Redis ledger's options, checked by every backend's constructor whether a Redis
    URL is given or not (as the settings check them): turning Redis on later must not be
    what reveals a bad value."""
    if isinstance(lease_seconds, bool) or not (
        isinstance(lease_seconds, int | float)
        and MIN_LEASE_SECONDS <= lease_seconds <= MAX_LEASE_SECONDS
    ):
        # renewed every third of itself, a shorter lease runs out during a Redis round
        # trip or a stalled loop: every write's reservation and key lock would lapse
        raise StorageConfigError(
            f"quota_lease_seconds (STORAGE_QUOTA_LEASE_SECONDS) must be a number of seconds "
            f"from {MIN_LEASE_SECONDS} to {MAX_LEASE_SECONDS}"
        )
    if namespace is not None and (
        not isinstance(namespace, str)
        or not namespace.strip()
        or len(namespace) > MAX_NAMESPACE_CHARS
        or not namespace_is_own(namespace)
    ):
        raise StorageConfigError(
            "quota_redis_namespace (STORAGE_QUOTA_REDIS_NAMESPACE) must be a non-blank str "
            f"of at most {MAX_NAMESPACE_CHARS} characters, neither starting with '}}' nor "
            "containing '}:', or None"
        )
