"""Google Cloud Storage, through obstore's ``GCSStore`` (extra ``file_storage[gcs]``).

Objects live at ``<prefix>/<key>`` in the bucket. Metadata travels as ``x-goog-meta-*``
headers, non-ASCII values RFC 2047 encoded as on S3. Presigned URLs are V4 signatures
made with the service account's private key.
"""

from __future__ import annotations

import asyncio
import os
import stat
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import SecretStr

from file_storage._cloud_settings import check_gcs_bucket
from file_storage._expiry import same_version
from file_storage._json import parse_json
from file_storage._keys import KeyLike
from file_storage._settings_common import checked
from file_storage.backends._core import Method
from file_storage.backends._obstore._backend import RETRY, ObstoreBackend
from file_storage.backends._obstore._conditional import SIGNED_SECONDS
from file_storage.backends._obstore._errors import is_precondition_error
from file_storage.backends.gcs._signing import signed_url
from file_storage.errors import InvalidKeyError, PreconditionFailedError, StorageConfigError
from file_storage.models import ObjectInfo

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["GCSStorageBackend"]

GCS_ENDPOINT = "https://storage.googleapis.com"
SETTING = "service_account (STORAGE_GCS_SERVICE_ACCOUNT)"
# GCS refuses object names starting with it (cloud.google.com/storage/docs/objects,
# "Object naming requirements"), kept for domain ownership checks
RESERVED_START = ".well-known/acme-challenge/"
# what object_store's ServiceAccountCredentials require (and V4 signing uses)
KEY_FIELDS = ("client_email", "private_key")
# a service-account key file is about 2.3 KB: anything far larger is some other file
MAX_KEY_FILE_BYTES = 2**20


class GCSStorageBackend(ObstoreBackend):
    """Stores objects in a GCS bucket under ``prefix``; see :class:`StorageBackend`.

    Args:
        bucket: the bucket, which must exist.
        prefix: the folder in the bucket this backend owns (``""``: the whole bucket).
        service_account: a service-account key: the path of its JSON file, or the JSON
            itself; ``None``: Application Default Credentials
            (``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server).
        endpoint_url: another server speaking the GCS XML API (an emulator); ``None``:
            storage.googleapis.com.
    """

    _public_setting = "STORAGE_GCS_PUBLIC_BASE_URL"
    _kind = "GCS"
    _copy_keeps_etag = True
    _endpoint_setting = "endpoint_url (STORAGE_GCS_ENDPOINT_URL)"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "storage",
        service_account: str | SecretStr | None = None,
        endpoint_url: str | None = None,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
        quota_redis_url: str | SecretStr | None = None,
        quota_redis_namespace: str | None = None,
        quota_lease_seconds: float = 60.0,
        quota_fail_open: bool = False,
        expire_interval_seconds: float | None = None,
        public_base_url: str | None = None,
    ) -> None:
        if not isinstance(bucket, str):
            raise StorageConfigError("bucket: must be a str")
        checked("bucket", check_gcs_bucket, bucket)
        if isinstance(service_account, str):
            service_account = SecretStr(service_account)
        if service_account is not None:
            # a missing file, a typo in its path or gcloud's user credential fails here, at
            # start-up, not at the first request in production; the file is small and
            # local, read like the .env file (obstore and presigning read it again when used)
            _key_fields(service_account.get_secret_value())
        super().__init__(
            prefix=prefix,
            identity=f"gcs:{bucket}",
            endpoint_url=endpoint_url,
            max_size_bytes=max_size_bytes,
            quota_refresh_seconds=quota_refresh_seconds,
            quota_redis_url=quota_redis_url,
            quota_redis_namespace=quota_redis_namespace,
            quota_lease_seconds=quota_lease_seconds,
            quota_fail_open=quota_fail_open,
            expire_interval_seconds=expire_interval_seconds,
            public_base_url=public_base_url,
        )
        self._bucket = bucket
        self._service_account = service_account

    def __repr__(self) -> str:
        return (
            f"GCSStorageBackend(bucket={self._bucket!r}, prefix={self._root!r}, "
            f"endpoint_url={self._endpoint_url!r})"
        )

    def _default_endpoint(self) -> str:
        return GCS_ENDPOINT

    def _key(self, path: KeyLike, operation: str) -> str:
        key = super()._key(path, operation)
        # refused before any I/O, as a key too long for the prefix is: GCS would answer
        # 400 (only with the prefix empty or starting with .well-known)
        if self._name(key).startswith(RESERVED_START):
            raise InvalidKeyError(
                f"invalid key: GCS refuses names starting with {RESERVED_START!r}",
                operation=operation,
                key=key,
            )
        return key

    def _key_file(self) -> dict[str, Any] | None:
        """The service-account key's JSON fields (a file read again: it may be rotated), or
        ``None`` (Application Default Credentials)."""
        if self._service_account is None:
            return None
        return _key_fields(self._service_account.get_secret_value())

    async def _signing_key(self) -> dict[str, Any] | None:
        """The service-account key's fields when it can sign (``None``: ADC)."""
        fields = await asyncio.to_thread(self._key_file)
        if not fields or not fields.get("private_key") or not fields.get("client_email"):
            return None
        return fields

    async def _delete_request(
        self, key: str, info: ObjectInfo, version: str | None
    ) -> tuple[str, dict[str, str]] | None:
        fields = await self._signing_key()
        if fields is None:
            return None  # ADC: object_store would sign through the IAM API, for URLs only
        if version is None:
            # the ETag is the content's MD5, which a rewrite of the same bytes keeps: the
            # generation pins the delete, read by a HEAD that must still match ``info``
            try:
                current, version = await self._head_meta(key, if_match=info.etag)
            except Exception as exc:
                if is_precondition_error(exc):
                    raise PreconditionFailedError("the object changed") from exc
                raise
            if version is None or not same_version(current, info):
                raise PreconditionFailedError("the object changed")
        headers = {"x-goog-if-generation-match": version}
        url = signed_url(
            endpoint=self._endpoint_url or fields.get("gcs_base_url") or GCS_ENDPOINT,
            bucket=self._bucket,
            name=self._name(key),
            method="DELETE",
            expires_in=SIGNED_SECONDS,
            client_email=fields["client_email"],
            private_key=fields["private_key"],
            headers=headers,
        )
        return url, headers

    async def _copy_request(
        self, src: str, dst: str, info: ObjectInfo, version: str | None
    ) -> tuple[str, dict[str, str]] | None:
        fields = await self._signing_key()
        if fields is None or version is None:
            return None  # ADC (as for deletes), or no generation known: object_store's copy
        # the XML API's copy: the source named in a header, pinned to its generation (the
        # ETag, an MD5, would take a rewrite of the same bytes with other metadata)
        headers = {
            "x-goog-copy-source": f"{self._bucket}/{quote(self._name(src), safe='/')}",
            "x-goog-copy-source-if-generation-match": version,
        }
        url = signed_url(
            endpoint=self._endpoint_url or fields.get("gcs_base_url") or GCS_ENDPOINT,
            bucket=self._bucket,
            name=self._name(dst),
            method="PUT",
            expires_in=SIGNED_SECONDS,
            client_email=fields["client_email"],
            private_key=fields["private_key"],
            headers=headers,
        )
        return url, headers

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        fields = await self._signing_key()
        if fields is None:
            # no key of our own: object_store asks the IAM signBlob API to sign
            return await super()._presign(key, expires_in, method, content_type, filename)
        disposition = None
        if method == "GET":
            content_type, disposition = await self._served_headers(key, content_type, filename)
        return signed_url(
            endpoint=self._endpoint_url or fields.get("gcs_base_url") or GCS_ENDPOINT,
            bucket=self._bucket,
            name=self._name(key),
            method=method,
            expires_in=expires_in,
            client_email=fields["client_email"],
            private_key=fields["private_key"],
            content_type=content_type,
            disposition=disposition,
        )

    def _open_store(self, obs: ModuleType) -> ObjectStore:
        from obstore.store import GCSStore

        config: dict[str, Any] = {}
        if self._service_account is not None:
            value = self._service_account.get_secret_value()
            if _inline(value):  # checked by the constructor
                config["service_account_key"] = value
            else:
                config["service_account"] = value
        if self._endpoint_url is not None:
            config["base_url"] = self._endpoint_url
        return GCSStore(
            self._bucket,
            prefix=self._root or None,
            config=config,  # type: ignore[arg-type]
            client_options=self._client_options(),  # type: ignore[arg-type]
            retry_config=RETRY,  # type: ignore[arg-type]
        )


def _inline(value: str) -> bool:
    """Whether a service-account setting is the key's JSON itself, not a file's path."""
    return value.lstrip().startswith(("{", "["))


class _NotAFile(Exception):
    pass


def _read_key_file(path: str) -> bytes:
    """The start of the file at ``path``; a FIFO or device (``/dev/stdin``) is refused
    without waiting for a writer. Links are followed (a Kubernetes secret is one)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotAFile
        return file.read(MAX_KEY_FILE_BYTES + 1)


def _key_fields(value: str) -> dict[str, Any]:
    """The fields of the service-account key ``value`` (its JSON, or the path of its file).

    Raises StorageConfigError naming the setting when the file cannot be read or the JSON
    is not a service-account key, quoting neither the key nor the path (which may be a
    key pasted without its braces)."""
    problem = ""
    if not _inline(value):
        try:
            data = _read_key_file(value)
        except _NotAFile:
            problem = "the key file is not a regular file"
        except OSError as exc:
            problem = f"the key file cannot be read ({exc.strerror or type(exc).__name__})"
        except ValueError:  # open() refuses a NUL in a path
            problem = "the key file's path contains a NUL character"
        else:
            if len(data) > MAX_KEY_FILE_BYTES:
                problem = "the key file is too large to be a service-account key"
            else:
                value = data.decode("utf-8", errors="replace")
        if problem:
            # raised outside the except block: the OSError holds the path
            raise StorageConfigError(f"{SETTING}: {problem}")
    try:
        fields = parse_json(value)
    except ValueError:  # nested too deeply among them
        fields = None
    if not isinstance(fields, dict):
        raise StorageConfigError(
            f"{SETTING}: not valid JSON: the key file's JSON object, or the path of the file"
        )
    if not all(isinstance(fields.get(name), str) and fields[name] for name in KEY_FIELDS):
        raise StorageConfigError(
            f"{SETTING}: not a service-account key (no client_email or private_key): give a "
            "service account's JSON key, or leave it unset for Application Default Credentials"
        )
    return fields
