"""Azure Blob Storage, through obstore's ``AzureStore`` (extra ``file_storage[azure]``).

Objects are block blobs at ``<prefix>/<key>`` in the container. Azure metadata names must
be C# identifiers, so a name that is not one (``my-name``) travels hex-encoded behind
``fs_`` and comes back as given; non-ASCII values travel RFC 2047 encoded, as on S3.
"""

from __future__ import annotations

import base64
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from file_storage._cloud_settings import check_azure_account, check_azure_container
from file_storage._keys import KeyLike
from file_storage._settings_common import check_http_url, checked
from file_storage.backends._core import Method
from file_storage.backends._obstore._backend import ESCAPE, RETRY, ObstoreBackend, escape_name
from file_storage.backends._obstore._conditional import SIGNED_SECONDS, send_head
from file_storage.backends.azure._copies import COPY_WAIT, CopyStatus, Sign, wait_for_copy
from file_storage.backends.azure._sas import SAS_VERSION, service_sas_url
from file_storage.errors import (
    InvalidKeyError,
    StorageConfigError,
    StorageError,
    StorageUnavailableError,
)
from file_storage.models import ObjectInfo

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["AzureStorageBackend"]

# Azurite's well-known development account (learn.microsoft.com, "Use Azurite"): public,
# the same in every copy of the emulator, and accepted by nothing but the emulator
EMULATOR_ACCOUNT = "devstoreaccount1"
EMULATOR_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
EMULATOR_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
# "The number of path segments comprising the blob name cannot exceed 254"
# (learn.microsoft.com, "Naming and Referencing Containers, Blobs, and Metadata")
MAX_SEGMENTS = 254


class AzureStorageBackend(ObstoreBackend):
    """Stores objects in an Azure Blob container under ``prefix``; see :class:`StorageBackend`.

    Args:
        container: the container, which must exist.
        account: the storage account (may come from ``connection_string`` instead).
        prefix: the folder in the container this backend owns (``""``: all of it).
        access_key: the account's shared key; signs requests and presigned URLs (SAS).
        connection_string: ``AccountName=...;AccountKey=...;BlobEndpoint=...`` (or
            ``UseDevelopmentStorage=true`` for a local Azurite) instead of the others.
        endpoint_url: the blob endpoint, such as an emulator's
            ``http://127.0.0.1:10000/devstoreaccount1``; ``None``: Azure's.

    Without a key or connection string, obstore takes credentials from the environment
    (``AZURE_*`` variables, managed identity); presigned URLs then need a user delegation
    key, which that identity must be allowed to get.
    """

    _public_setting = "STORAGE_AZURE_PUBLIC_BASE_URL"
    _kind = "Azure"
    _endpoint_setting = (
        "endpoint_url (STORAGE_AZURE_ENDPOINT_URL, or BlobEndpoint of the connection string)"
    )

    def __init__(
        self,
        container: str,
        *,
        account: str | None = None,
        prefix: str = "storage",
        access_key: str | SecretStr | None = None,
        connection_string: str | SecretStr | None = None,
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
        if access_key is not None and connection_string is not None:
            raise StorageConfigError("access_key and connection_string: give one, not both")
        key = _wrap(access_key)
        _check_key(key, "access_key (STORAGE_AZURE_ACCESS_KEY)")
        if connection_string is not None:
            account, key, endpoint_url = _parse_connection_string(
                _wrap(connection_string), account, endpoint_url
            )
            _check_key(key, "connection string: AccountKey")
        if not account:
            raise StorageConfigError("account: required (or a connection string naming it)")
        if not isinstance(container, str):
            raise StorageConfigError("container: must be a str")
        checked("account", check_azure_account, account)
        checked("container", check_azure_container, container)
        super().__init__(
            prefix=prefix,
            identity=f"azure:{account}/{container}",
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
        self._container = container
        self._account: str = account
        self._access_key = key

    def __repr__(self) -> str:
        return (
            f"AzureStorageBackend(account={self._account!r}, container={self._container!r}, "
            f"prefix={self._root!r}, endpoint_url={self._endpoint_url!r})"
        )

    def _default_endpoint(self) -> str:
        return f"https://{self._account}.blob.core.windows.net"

    def _key(self, path: KeyLike, operation: str) -> str:
        key = super()._key(path, operation)
        # refused before any I/O, as a key too long for the prefix is: Azure answers 400
        if self._name(key).count("/") >= MAX_SEGMENTS:
            raise InvalidKeyError(
                f"invalid key: more than {MAX_SEGMENTS} segments with the prefix (Azure's limit)",
                operation=operation,
                key=key,
            )
        # Azure's naming rules: "Avoid blob names that end with a dot"; the service (and
        # its SDKs) drop it, so "u1." would read and replace the blob "u1". A folder's
        # trailing dot is refused too: URL handling drops it from any path segment
        if any(segment.endswith(".") for segment in key.split("/")):
            raise InvalidKeyError(
                "invalid key: a segment ends with '.', which Azure drops from a blob name",
                operation=operation,
                key=key,
            )
        return key

    def _open_store(self, obs: ModuleType) -> ObjectStore:
        from obstore.store import AzureStore

        config: dict[str, Any] = {"account_name": self._account}
        if self._access_key is not None:
            config["account_key"] = self._access_key.get_secret_value()
        if self._endpoint_url is not None:
            config["endpoint"] = self._endpoint_url
        return AzureStore(
            self._container,
            prefix=self._root or None,
            config=config,  # type: ignore[arg-type]
            client_options=self._client_options(),  # type: ignore[arg-type]
            retry_config=RETRY,  # type: ignore[arg-type]
        )

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        if self._access_key is None:
            # a user delegation SAS, made by object_store (no response headers)
            return await super()._presign(key, expires_in, method, content_type, filename)
        endpoint = self._endpoint_url or self._default_endpoint()
        disposition = None
        if method == "GET":
            content_type, disposition = await self._served_headers(key, content_type, filename)
        return service_sas_url(
            endpoint=endpoint,
            account=self._account,
            account_key=self._access_key.get_secret_value(),
            container=self._container,
            name=self._name(key),
            method=method,
            expires_in=expires_in,
            content_type=content_type if method == "GET" else None,
            disposition=disposition,
        )

    async def _delete_request(
        self, key: str, info: ObjectInfo, version: str | None
    ) -> tuple[str, dict[str, str]] | None:
        # Azure's ETag changes on every write of the blob: If-Match pins the delete to it
        if self._access_key is None or info.etag is None:
            return None  # the credential chain: a user delegation SAS is a request away
        return self._sas(key, "DELETE"), {"If-Match": info.etag, "x-ms-version": SAS_VERSION}

    async def _copy_request(
        self, src: str, dst: str, info: ObjectInfo, version: str | None
    ) -> tuple[str, dict[str, str]] | None:
        # Copy Blob, as object_store's copy, with x-ms-source-if-match: the blob's ETag
        # changes on every write. The source is read through a SAS of its own (a request
        # authorized by a SAS reaches no other blob without one)
        if self._access_key is None or info.etag is None:
            return None  # the credential chain: object_store's copy, unpinned
        # valid while the copy may still read it (a pending copy reads it after its answer,
        # awaited up to COPY_WAIT): never shown, it goes to Azure in this header alone
        source = self._sas(src, "GET", expires_in=int(COPY_WAIT) + SIGNED_SECONDS)
        headers = {
            "x-ms-copy-source": source,
            "x-ms-source-if-match": info.etag,
            "x-ms-version": SAS_VERSION,
        }
        return self._sas(dst, "PUT"), headers

    async def _copy_done(self, dst: str, answered: dict[str, str] | None) -> None:
        # Copy Blob may answer "pending" and go on reading the source after its answer:
        # nothing (a move's delete of its source) trusts the copy before it is complete
        state = None if answered is None else CopyStatus(answered)
        if state is not None and not state.pending:
            return  # copied with its answer (always so on Azurite)
        copy_id = None if state is None else state.copy_id
        sign = await self._copy_signer(dst)
        if sign is not None:
            await wait_for_copy(copy_id, sign, SAS_VERSION)

    async def _copied(self, src: str, dst: str, found: object) -> bool:
        if not await super()._copied(src, dst, found):
            return False
        # and the destination's copy properties name this source (a write of the same
        # size and metadata by another writer clears them): then it is complete, awaited
        sign = await self._copy_signer(dst)
        if sign is None:
            return True
        answer, headers = await send_head(await sign("GET"), self._kind)
        state = CopyStatus(headers)
        if answer != "done" or state.source is None or state.status in ("failed", "aborted"):
            return False
        if unquote(urlsplit(state.source).path) != unquote(urlsplit(self._blob_url(src)).path):
            return False
        if state.pending:
            await wait_for_copy(state.copy_id, sign, SAS_VERSION)
        return True

    async def _copy_signer(self, dst: str) -> Sign | None:
        """What signs the requests that look at (and abort) a copy to ``dst``; ``None``:
        nothing can (a credential that gets no user delegation key): not awaited. Raises
        StorageUnavailableError when the key cannot be had for now."""
        if self._access_key is not None:

            async def sign(method: Method) -> str:
                return self._sas(dst, method)

            return sign
        try:
            await super()._presign(dst, SIGNED_SECONDS, "GET")
        except Exception as exc:
            mapped = exc if isinstance(exc, StorageError) else self._map_error(exc, "", None)
            if isinstance(mapped, StorageUnavailableError):
                raise  # no key for now (the service unreachable): the copy is not trusted
            return None

        async def delegated(method: Method) -> str:
            return await super(AzureStorageBackend, self)._presign(dst, SIGNED_SECONDS, method)

        return delegated

    def _blob_url(self, key: str) -> str:
        """The blob's URL, unsigned."""
        endpoint = self._endpoint_url or self._default_endpoint()
        return f"{endpoint.rstrip('/')}/{self._container}/{quote(self._name(key))}"

    def _sas(self, key: str, method: str, expires_in: int = SIGNED_SECONDS) -> str:
        """A URL allowing ``method`` on ``key``'s blob for one conditional request."""
        assert self._access_key is not None
        return service_sas_url(
            endpoint=self._endpoint_url or self._default_endpoint(),
            account=self._account,
            account_key=self._access_key.get_secret_value(),
            container=self._container,
            name=self._name(key),
            method=method,
            expires_in=expires_in,
        )

    def _encode_name(self, name: str) -> str:
        if _IDENTIFIER.fullmatch(name) and not name.startswith(ESCAPE):
            return name
        return escape_name(name)


def _wrap(secret: str | SecretStr | None) -> SecretStr | None:
    return SecretStr(secret) if isinstance(secret, str) else secret


def _check_key(key: SecretStr | None, name: str) -> None:
    """An account key is base64 (it signs every request): refuse another at build time."""
    if key is None:
        return
    try:
        base64.b64decode(key.get_secret_value(), validate=True)
    except ValueError:
        valid = False
    else:
        valid = bool(key.get_secret_value())
    if not valid:  # raised outside the except block: the key stays out of __context__
        raise StorageConfigError(f"{name}: must be the account's key, in base64")


def _parse_connection_string(
    secret: SecretStr | None, account: str | None, endpoint_url: str | None
) -> tuple[str | None, SecretStr | None, str | None]:
    """``(account, key, endpoint)`` from a connection string; explicit arguments win."""
    assert secret is not None
    fields: dict[str, str] = {}
    for part in secret.get_secret_value().split(";"):
        name, sep, value = part.strip().partition("=")
        if not part.strip():
            continue
        if not sep:
            raise StorageConfigError("connection string: expected Name=value pairs")
        fields[name.strip().lower()] = value.strip()
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        return (
            account or EMULATOR_ACCOUNT,
            SecretStr(EMULATOR_KEY),
            endpoint_url or EMULATOR_ENDPOINT,
        )
    if "sharedaccesssignature" in fields:
        raise StorageConfigError(
            "connection string: SharedAccessSignature is not supported; give AccountKey"
        )
    account_name = account or fields.get("accountname")
    key = SecretStr(fields["accountkey"]) if fields.get("accountkey") else None
    endpoint: str | None = endpoint_url
    if endpoint is None and fields.get("blobendpoint"):
        endpoint = _endpoint("BlobEndpoint", fields["blobendpoint"])
    if endpoint is None and account_name and "endpointsuffix" in fields:
        protocol = fields.get("defaultendpointsprotocol", "https")
        endpoint = _endpoint(
            "the endpoint of DefaultEndpointsProtocol and EndpointSuffix",
            f"{protocol}://{account_name}.blob.{fields['endpointsuffix']}",
        )
    return account_name, key, endpoint


def _endpoint(field: str, url: str) -> str | None:
    """The connection string's endpoint, checked like ``endpoint_url`` (never echoed)."""
    try:
        return check_http_url(url)
    except ValueError as exc:
        problem = str(exc)
    # outside the except block: the URL, which may hold credentials, stays out of __context__
    raise StorageConfigError(f"connection string: {field} {problem}")
