"""The S3 backend's settings: argument checks, the botocore client and its event hooks.

Checks raise :class:`StorageConfigError` naming the parameter, never echoing a value that
could be a secret. The SDK is imported by :func:`load_sdk` only, on first client creation.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from file_storage._keys import validate_key
from file_storage._settings_common import (
    MAX_SECONDS,
    S3_BUCKET,
    check_s3_region,
    checked,
    checked_url,
    has_space_or_control,
    warn_in_clear,
)
from file_storage.backends._core import count_attempt
from file_storage.backends.s3 import _multipart as mp
from file_storage.backends.s3 import _parts
from file_storage.backends.s3._checksums import CHECKSUM_MODES
from file_storage.backends.s3._errors import ATTEMPTS_ATTR, undecodable
from file_storage.errors import InvalidKeyError, StorageConfigError

__all__ = ["S3Options", "load_sdk", "open_client", "s3_options"]

logger = logging.getLogger("file_storage.backends.s3")

CLIENTS = ("aioboto3", "obstore")


@dataclass(frozen=True, slots=True)
class S3Options:
    """Checked constructor arguments of :class:`S3StorageBackend`."""

    bucket: str
    root: str  # the prefix and its "/", or ""
    region: str
    access_key_id: str | None
    secret_access_key: SecretStr | None = field(repr=False)
    session_token: SecretStr | None = field(repr=False)
    endpoint_url: str | None
    public_endpoint_url: str | None
    addressing_style: str
    threshold: int
    chunk_size: int
    concurrency: int
    sse: dict[str, str]
    checksum: str
    max_attempts: int
    retry_mode: str
    connect_timeout: float
    read_timeout: float
    pool_size: int
    fallback_path: Path | None
    flush_interval: float | None
    client: str = "aioboto3"  # the transport: aiobotocore, or obstore (s3/_obstore.py)


def s3_options(
    bucket: object,
    *,
    prefix: object,
    region: object,
    access_key_id: object,
    secret_access_key: object,
    session_token: object,
    endpoint_url: object,
    public_endpoint_url: object,
    addressing_style: object,
    max_size_bytes: object,
    quota_refresh_seconds: object,
    multipart_threshold: object,
    multipart_chunk_size: object,
    max_concurrency: object,
    sse: object,
    sse_kms_key_id: object,
    checksum: object,
    max_attempts: object,
    retry_mode: object,
    connect_timeout: object,
    read_timeout: object,
    max_pool_connections: object,
    fallback_path: object,
    flush_interval_seconds: object,
    client: object = "aioboto3",
) -> S3Options:
    """Check every argument; raise StorageConfigError naming the first bad one."""
    if max_size_bytes is not None:
        _int("max_size_bytes", max_size_bytes, 0)
    if quota_refresh_seconds is not None and (
        isinstance(quota_refresh_seconds, bool)
        or not isinstance(quota_refresh_seconds, int | float)
        or quota_refresh_seconds < 0
    ):
        raise StorageConfigError("quota_refresh_seconds must be a number of seconds >= 0")
    if not isinstance(bucket, str) or not S3_BUCKET.fullmatch(bucket):
        raise StorageConfigError("bucket must be a valid S3 bucket name")
    if not isinstance(region, str) or not region:
        raise StorageConfigError("region must be a non-empty str")
    checked("region", check_s3_region, region)
    if access_key_id is not None and not isinstance(access_key_id, str):
        raise StorageConfigError("access_key_id must be a str")
    if access_key_id is not None and has_space_or_control(access_key_id):
        raise StorageConfigError(
            "access_key_id must not contain spaces, line breaks or control characters"
        )
    secret = _secret("secret_access_key", secret_access_key)
    token = _secret("session_token", session_token)
    if (access_key_id is None) != (secret is None):
        raise StorageConfigError("set both access_key_id and secret_access_key, or neither")
    if token is not None and access_key_id is None:
        raise StorageConfigError("session_token needs access_key_id and secret_access_key")
    concurrency = _int("max_concurrency", max_concurrency, 1)
    encryption: dict[str, str] = {}
    if _choice("sse", sse, (None, "AES256", "aws:kms")) is not None:
        encryption["ServerSideEncryption"] = str(sse)
    if sse_kms_key_id is not None:
        if sse != "aws:kms" or not isinstance(sse_kms_key_id, str) or not sse_kms_key_id:
            raise StorageConfigError("sse_kms_key_id needs sse='aws:kms'")
        encryption["SSEKMSKeyId"] = sse_kms_key_id
    if fallback_path is not None and not isinstance(fallback_path, str | os.PathLike):
        raise StorageConfigError("fallback_path must be a path")
    if fallback_path is not None and "\x00" in str(os.fspath(fallback_path)):
        raise StorageConfigError("fallback_path must not contain a NUL character")
    if flush_interval_seconds is not None and fallback_path is None:
        raise StorageConfigError("flush_interval_seconds needs fallback_path")
    options = S3Options(
        bucket=bucket,
        root=_root(prefix),
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret,
        session_token=token,
        endpoint_url=checked_url("endpoint_url", endpoint_url),
        public_endpoint_url=checked_url("public_endpoint_url", public_endpoint_url),
        addressing_style=_choice("addressing_style", addressing_style, ("auto", "path", "virtual")),
        threshold=_int("multipart_threshold", multipart_threshold, 0, mp.MAX_PUT_SIZE),
        chunk_size=_int(
            "multipart_chunk_size", multipart_chunk_size, _parts.MIN_PART_SIZE, _parts.MAX_PART_SIZE
        ),
        concurrency=concurrency,
        sse=encryption,
        checksum=_choice("checksum", checksum, CHECKSUM_MODES),
        max_attempts=_int("max_attempts", max_attempts, 1),
        retry_mode=_choice("retry_mode", retry_mode, ("standard", "adaptive")),
        connect_timeout=_seconds("connect_timeout", connect_timeout),
        read_timeout=_seconds("read_timeout", read_timeout),
        pool_size=(
            max(10, 2 * concurrency)
            if max_pool_connections is None
            else _int("max_pool_connections", max_pool_connections, 1)
        ),
        fallback_path=(
            None if fallback_path is None else Path(os.fspath(fallback_path)).expanduser()
        ),
        flush_interval=(
            None
            if flush_interval_seconds is None
            else _seconds("flush_interval_seconds", flush_interval_seconds)
        ),
        client=_choice("client", client, CLIENTS),
    )
    warn_in_clear(
        options.endpoint_url,
        "endpoint_url (STORAGE_S3_ENDPOINT_URL)",
        "the requests, their signatures and any session token",
    )
    warn_in_clear(
        options.public_endpoint_url,
        "public_endpoint_url (STORAGE_S3_PUBLIC_ENDPOINT_URL)",
        "presigned URLs (usable by anyone who sees them until they expire) and the files",
    )
    return options


def _root(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise StorageConfigError("prefix must be a str")
    if prefix in ("", "/"):  # the whole bucket
        return ""
    if prefix.startswith("/") or prefix.endswith("/"):
        raise StorageConfigError("prefix must not start or end with '/'")
    try:  # leave room for a "/" and at least one byte of key
        validate_key(prefix, reserved_bytes=2)
    except InvalidKeyError as exc:
        raise StorageConfigError(f"prefix is not valid: {exc.detail}") from None
    return f"{prefix}/"


def _int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StorageConfigError(f"{name} must be an int >= {minimum}")
    if maximum is not None and value > maximum:
        raise StorageConfigError(f"{name} must be at most {maximum}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < MAX_SECONDS:
        raise StorageConfigError(f"{name} must be a positive number of seconds")
    return float(value)


def _choice(name: str, value: object, allowed: tuple[str | None, ...]) -> Any:
    if value not in allowed:
        raise StorageConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}")
    return value


def _secret(name: str, value: object) -> SecretStr | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = SecretStr(value)
    if not isinstance(value, SecretStr):
        raise StorageConfigError(f"{name} must be a str or SecretStr")
    if has_space_or_control(value.get_secret_value()):  # a secret file's line break
        raise StorageConfigError(
            f"{name} must not contain spaces, line breaks or control characters"
        )
    return value


# ---------------------------------------------------------------- the client


def load_sdk() -> tuple[ModuleType, ModuleType]:
    """Import aiobotocore's session and config modules on first client creation."""
    try:
        import aiobotocore.config
        import aiobotocore.session
    except ImportError as exc:
        raise StorageConfigError(
            "the S3 backend needs aioboto3: pip install 'aioboto3>=15'"
        ) from exc
    return aiobotocore.session, aiobotocore.config


_http_session: Any = None


def _http_session_class() -> Any:
    """aiobotocore's aiohttp session, with the wait for a free pooled connection bounded
    and every resend left to botocore.

    aiobotocore gives aiohttp only ``sock_connect`` and ``sock_read``: aiohttp's
    ``connect`` timeout, the one that also covers waiting for a free connection of the
    pool, stays unset, so once streams nobody finishes hold every pooled connection each
    later request waits forever. ``connect`` is set to ``connect_timeout``: the wait for a
    connection, pooled or new, is then bounded per attempt and ends in a
    ``ConnectTimeoutError`` (``StorageUnavailableError`` once the retries are spent).
    """
    global _http_session
    if _http_session is None:
        import aiohttp
        from aiobotocore.httpsession import AIOHTTPSession

        class BoundedWaits(AIOHTTPSession):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                # a private attribute: an aiobotocore that names it otherwise keeps its
                # own timeouts (tests/backends/test_s3_pool.py then fails, not S3)
                timeout = getattr(self, "_timeout", None)
                if isinstance(timeout, aiohttp.ClientTimeout):
                    self._timeout = aiohttp.ClientTimeout(
                        sock_connect=timeout.sock_connect,
                        sock_read=timeout.sock_read,
                        connect=timeout.sock_connect,
                    )

            async def _get_session(self, proxy_url: Any) -> Any:
                session = await super()._get_session(proxy_url)
                # aiohttp sends a PUT or DELETE again by itself when a pooled connection
                # drops, unseen by botocore: its count of retries would then miss a try
                # that may have landed (s3._landed). botocore retries instead, counted.
                # A private attribute: an aiohttp that names it otherwise resends, and
                # tests/faults/test_s3_conditional_lost.py fails
                if hasattr(session, "_retry_connection"):
                    session._retry_connection = False
                return session

        _http_session = BoundedWaits
    return _http_session


_shared_session: Any = None


def _session(session_module: ModuleType) -> Any:
    """One botocore session per process: it caches the service model, so clients after
    the first build in milliseconds instead of ~100 ms. Sessions are not bound to an
    event loop; each backend still owns its client, and credentials go to the client."""
    global _shared_session
    if _shared_session is None:
        _shared_session = session_module.get_session()
    return _shared_session


def _is_local(url: str) -> bool:
    """True for an IP or localhost endpoint, where virtual-host buckets cannot resolve."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def addressing(options: S3Options, endpoint: str | None) -> str:
    """The addressing style for ``endpoint``: "auto" is path style on IP and localhost."""
    style = options.addressing_style
    if style == "auto" and endpoint is not None and _is_local(endpoint):
        style = "path"
    return style


def open_client(options: S3Options, endpoint: str | None) -> Any:
    """An aiobotocore client context manager for ``endpoint``, retries and timeouts set."""
    session_module, config_module = load_sdk()
    style = addressing(options, endpoint)
    config = config_module.AioConfig(
        http_session_cls=_http_session_class(),
        region_name=options.region,
        signature_version="s3v4",  # presigned URLs on custom endpoints need SigV4
        s3={"addressing_style": style},
        # total attempts, the first included ("max_attempts" there counts retries only)
        retries={"total_max_attempts": options.max_attempts, "mode": options.retry_mode},
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=options.pool_size,
        # Client CPU per small request (docs/benchmarks.md): the library validates its own
        # parameters (keys, bucket, sizes) before any request, so botocore's second
        # validation pass is skipped; uploads set their CRC32 themselves, so botocore
        # computes checksums only where an operation requires one (DeleteObjects).
        # Response checksums are still validated.
        parameter_validation=False,
        request_checksum_calculation="when_required",
    )
    credentials: dict[str, str] = {}
    if options.access_key_id is not None and options.secret_access_key is not None:
        credentials["aws_access_key_id"] = options.access_key_id
        credentials["aws_secret_access_key"] = options.secret_access_key.get_secret_value()
        if options.session_token is not None:
            credentials["aws_session_token"] = options.session_token.get_secret_value()
    _redact_sdk_logs(options)
    return _session(session_module).create_client(
        "s3", region_name=options.region, endpoint_url=endpoint, config=config, **credentials
    )


def instrument(client: Any) -> None:
    """Register the event hooks every client of the backend needs."""
    events = client.meta.events
    # aiohttp starts the read timeout only once the body is sent, and sends a body with
    # "Expect: 100-continue" only after the server's go-ahead: a server that never
    # answers would hang the request forever. Bodies here are at most one part.
    events.register_last("before-call.s3", _drop_expect)
    events.register("before-send.s3", _count_attempt)
    events.register_first("needs-retry.s3", _undecodable)
    events.register("needs-retry.s3", _note_attempts)


def _drop_expect(params: dict[str, Any], **_: Any) -> None:
    params.get("headers", {}).pop("Expect", None)


def _count_attempt(**_: Any) -> None:
    count_attempt()


def _undecodable(caught_exception: BaseException | None, **_: Any) -> None:
    """An answer whose headers are no UTF-8 (a Content-Type stored as raw Latin-1 bytes,
    which HTTP allows; aiobotocore decodes them strictly) is raised at once: botocore
    would take it for a network error and ask again, and the same answer would come."""
    if undecodable(caught_exception):
        assert caught_exception is not None
        raise caught_exception


def _note_attempts(attempts: int, caught_exception: BaseException | None, **_: Any) -> None:
    """Remember on a network error how many attempts botocore made before giving up."""
    if caught_exception is not None:
        setattr(caught_exception, ATTEMPTS_ATTR, attempts)


class _Redactor(logging.Filter):
    """Blank credentials out of the SDK's DEBUG logs (SigV4 canonical requests and request
    dumps show the session token; the secret key is never sent, but is checked too)."""

    def __init__(self) -> None:
        super().__init__()
        # replaced, never mutated: another thread may be filtering a record meanwhile
        self.secrets: frozenset[str] = frozenset()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it, not the SDK call
            return True
        if any(secret in message for secret in secrets):
            for secret in secrets:
                message = message.replace(secret, "<redacted>")
            record.msg, record.args = message, None
        return True


_redactor = _Redactor()


def _redact_sdk_logs(options: S3Options) -> None:
    for secret in (options.secret_access_key, options.session_token):
        if secret is not None and secret.get_secret_value():
            _redactor.secrets |= {secret.get_secret_value()}
    # a filter applies to records of its own logger only: attach to each SDK logger
    for name in list(logging.Logger.manager.loggerDict):
        if name.split(".", 1)[0] in ("botocore", "aiobotocore", "aiohttp", "urllib3"):
            sdk_logger = logging.getLogger(name)
            if _redactor not in sdk_logger.filters:
                sdk_logger.addFilter(_redactor)
