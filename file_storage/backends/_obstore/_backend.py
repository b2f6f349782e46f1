"""The hooks of the backends built on obstore (the Rust ``object_store`` client).

:class:`ObstoreBackend` moves bytes for the GCS and Azure backends: one obstore store per
backend, opened on first use (obstore runs its requests on its own Rust runtime and
answers on whichever asyncio loop awaits, so one store serves every loop and thread).
A subclass says how to open its store, how metadata names travel and how URLs are
signed; everything else (keys under the prefix, conditional writes, object headers,
ranges, pinned reads, listings, copies) is the same; the conditional moves and deletes
are :class:`~._moves.ObstoreConditions`. obstore is imported when the first store
opens, never by ``import file_storage``.

Neither store keeps versions here (object_store has no API for GCS generations or Azure
blob versions): every object has the one version ``"null"`` (the base class's default),
and ``set_versioning`` raises :class:`StorageConfigError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import urlsplit

from file_storage._keys import validate_key
from file_storage._metadata import decode_value, encode_value
from file_storage._settings_common import check_base_url, checked, checked_url, warn_in_clear
from file_storage._streams import prepend, rechunk
from file_storage.backends import _forks, _pages
from file_storage.backends._core import DELETE_BATCH, CoreArgs, Method
from file_storage.backends._obstore._errors import (
    is_discarded_block_list,
    is_lost_commit,
    is_precondition_error,
    is_range_error,
    is_refused_condition,
    map_obstore_error,
)
from file_storage.backends._obstore._landed import Sent, own_object
from file_storage.backends._obstore._moves import ObstoreConditions
from file_storage.backends._obstore._names import (
    ESCAPE,
    RESERVED,
    STANDARD,
    escape_name,
    unescape_name,
)
from file_storage.backends._obstore._requests import Interruptible, to_the_end
from file_storage.backends._obstore._rules import ObstoreRules
from file_storage.backends._support import server_of
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.errors import (
    InvalidKeyError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StorageUnavailableError,
)
from file_storage.models import ObjectInfo

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["ESCAPE", "ObstoreBackend", "escape_name", "load_obstore", "unescape_name"]

#: a stream that ends within this many bytes goes as one PUT; a longer one as a multipart
#: (GCS) or block-list (Azure) upload of parts this size, in parallel, aborted on failure
PART_SIZE = 8 * 2**20
PART_CONCURRENCY = 4
LIST_PAGE = 1000
DELETE_CONCURRENCY = 16
# object_store's default retries a dead server for up to 3 minutes; like the S3 backend's
# 5 attempts, give up after about 1.5 s of backoff on a refused connection
RETRY: dict[str, Any] = {
    "max_retries": 4,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=5),
        "base": 2,
    },
}


def load_obstore(backend: str) -> ModuleType:
    """Import obstore, or say which extra installs it."""
    try:
        import obstore
    except ImportError as exc:
        raise StorageConfigError(
            f"the {backend} backend needs obstore: pip install 'file_storage[{backend.lower()}]'"
        ) from exc
    return obstore


class ObstoreBackend(ObstoreConditions):
    """A :class:`StorageBackend` whose hooks are requests of one obstore store."""

    _cancel_may_land = True  # a request the store took completes whether awaited or not

    #: the setting ``endpoint_url`` comes from, in messages
    _endpoint_setting: str = "endpoint_url"

    def __init__(
        self,
        *,
        prefix: str,
        identity: str,
        endpoint_url: str | None = None,
        public_base_url: str | None = None,
        **core: Unpack[CoreArgs],
    ) -> None:
        if not isinstance(prefix, str):
            raise StorageConfigError("prefix: must be a str")
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidKeyError as exc:
                raise StorageConfigError(f"prefix: must be a valid key ({exc.detail})") from None
        self._root = prefix
        # keys live at <prefix>/<key>: leave room for both under the store's 1024 bytes
        self._key_overhead = len(prefix.encode()) + 1 if prefix else 0
        self._store_lock = threading.Lock()
        self._opened: ObjectStore | None = None
        self._obs: ModuleType | None = None
        self._public_base_url = checked("public_base_url", check_base_url, public_base_url)
        # checked as the settings check it: no credentials (repr shows it), a valid port
        self._endpoint_url = checked_url("endpoint_url", endpoint_url or None)
        warn_in_clear(
            self._endpoint_url, self._endpoint_setting, "the requests and their credentials"
        )
        super().__init__(quota_identity=f"{identity}/{prefix}", **core)
        self._identity = identity
        # expiry rules live in the store, shared by every process (see _obstore._rules)
        self._rules = ObstoreRules(self)

    def _store_place(self) -> str:
        # a bucket (container) of the same name on another server is another store; no
        # endpoint is the store's own, however spelled (the quota's identity, its Redis
        # namespace, stays without the endpoint, as it was)
        server = server_of(self._endpoint_url or self._default_endpoint())
        return f"{self._identity}@{server}/{self._root}"

    def _default_endpoint(self) -> str:
        """The server reached without ``endpoint_url``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- for subclasses

    def _open_store(self, obs: ModuleType) -> ObjectStore:
        """Build the obstore store (no I/O): bucket or container, prefix, credentials."""
        raise NotImplementedError

    def _encode_name(self, name: str) -> str:
        """The name a metadata entry travels under (``name`` is lower-case, an HTTP token)."""
        if name in RESERVED or name.startswith(ESCAPE):
            return escape_name(name)
        return name

    def _decode_name(self, name: str) -> str:
        """The metadata name ``name`` travels for: decoded only when this backend encodes
        that name so; any other (one stored before the escape existed, or by another
        tool, like ``fs_6162``) as it is, lower-cased."""
        name = name.lower()
        decoded = unescape_name(name)
        return decoded if self._encode_name(decoded) == name else name

    def _name(self, key: str) -> str:
        """The object's name in the bucket or container: ``<prefix>/<key>``."""
        return f"{self._root}/{key}" if self._root else key

    def _client_options(self) -> dict[str, Any] | None:
        """obstore's client options: plain HTTP only for an ``http://`` endpoint (an emulator)."""
        if self._endpoint_url is None:
            return None
        return {"allow_http": urlsplit(self._endpoint_url).scheme == "http"}

    def _update_version(self, info: ObjectInfo, version: str | None) -> dict[str, str]:
        """obstore's ``UpdateVersion`` for a write that replaces exactly ``info``."""
        update = {"e_tag": info.etag or ""}
        if version is not None:
            update["version"] = version
        return update

    # ---------------------------------------------------------------- plumbing

    def _store(self) -> tuple[ModuleType, ObjectStore]:
        _forks.obstore_call()  # in a child forked after the parent called it: refused
        if self._opened is None or self._obs is None:
            with self._store_lock:
                if self._opened is None:
                    obs = load_obstore(self._kind)
                    self._opened = self._open_store(obs)
                    self._obs = obs
        assert self._obs is not None  # set together with the store
        return self._obs, self._opened

    def _map_error(self, exc: Exception, operation: str, key: str | None) -> StorageError | None:
        mapped = map_obstore_error(exc, self._kind)
        return mapped if mapped is not None else super()._map_error(exc, operation, key)

    def _attributes(
        self,
        content_type: str,
        metadata: Mapping[str, str],
        cache_control: str | None,
        content_disposition: str | None,
    ) -> dict[str, str]:
        attributes = {"Content-Type": content_type}
        if cache_control is not None:
            attributes["Cache-Control"] = cache_control
        if content_disposition is not None:
            attributes["Content-Disposition"] = content_disposition
        for name, value in metadata.items():
            attributes[self._encode_name(name)] = encode_value(value)
        return attributes

    def _info(self, meta: Mapping[str, Any], attributes: Mapping[str, Any] | None) -> ObjectInfo:
        attributes = attributes or {}
        metadata: dict[str, str] = {}
        for name, value in attributes.items():
            if name not in STANDARD and isinstance(value, str):
                metadata[self._decode_name(name)] = decode_value(value)
        modified: datetime = meta["last_modified"]
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return ObjectInfo(
            key=meta["path"],
            size=meta["size"],
            last_modified=modified.astimezone(UTC),
            etag=_quoted(meta.get("e_tag")),
            content_type=attributes.get("Content-Type"),
            metadata=metadata,
            cache_control=attributes.get("Cache-Control"),
            content_disposition=attributes.get("Content-Disposition"),
        )

    async def _head_meta(
        self, key: str, if_match: str | None = None
    ) -> tuple[ObjectInfo, str | None]:
        obs, store = self._store()
        options: dict[str, Any] = {"head": True}
        if if_match is not None:
            options["if_match"] = if_match
        result = await obs.get_async(store, key, options=options)
        return self._info(result.meta, result.attributes), result.meta.get("version")

    async def _head(self, key: str, if_match: str | None = None) -> ObjectInfo:
        return (await self._head_meta(key, if_match))[0]

    async def _mode(self, key: str, options: WriteOptions) -> Any:
        """obstore's put mode for the write's condition (``None``: overwrite)."""
        if not options.overwrite:
            return "create"  # GCS: x-goog-if-generation-match: 0; Azure: If-None-Match: *
        if options.if_match is None:
            return None
        try:
            info, version = await self._head_meta(key)
        except FileNotFoundError:
            raise PreconditionFailedError("no object at this key to match") from None
        if info.etag != options.if_match:
            raise PreconditionFailedError("the object changed since that ETag")
        # the server refuses the write if the object was replaced since this HEAD
        return self._update_version(info, version)

    # ---------------------------------------------------------------- hooks

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> str | None:
        obs, store = self._store()
        attributes = self._attributes(
            content_type, metadata, options.cache_control, options.content_disposition
        )
        if not isinstance(body, bytes):
            # a short stream goes as one PUT (one request, no upload to abort); a long one
            # as parts, so memory stays at PART_SIZE * PART_CONCURRENCY whatever its size
            # joined as they come: a list of a million tiny chunks is ~40x their bytes
            head = bytearray()
            async for chunk in body:
                head += chunk
                if len(head) > PART_SIZE and not options.conditional:
                    break
            else:
                # a conditional write is one PUT carrying the condition: object_store
                # completes multipart uploads without one (docs/compatibility.md)
                body = bytes(head)
            if not isinstance(body, bytes):
                chunks = Interruptible(prepend([bytes(head)], rechunk(body, PART_SIZE)))
                upload = obs.put_async(
                    store,
                    key,
                    chunks,
                    attributes=attributes,
                    use_multipart=True,
                    chunk_size=PART_SIZE,
                    max_concurrency=PART_CONCURRENCY,
                )
                try:
                    return _put_etag(await to_the_end(upload, chunks))
                except Exception as exc:
                    if is_lost_commit(exc) and await self._landed(key, chunks, content_type):
                        return None  # a retried completion: a stat asks
                    if is_discarded_block_list(exc):
                        # the object at key may be ours or another writer's of the same
                        # size: never reported as saved; the quota counts what key holds
                        raise StorageUnavailableError(
                            "the upload's block list was refused (InvalidBlockList): "
                            "whether this write landed is unknown",
                            operation="save",
                            key=key,
                        ) from exc
                    raise
        mode = await self._mode(key, options)
        started = datetime.now(UTC)
        put = obs.put_async(store, key, body, attributes=attributes, mode=mode, use_multipart=False)
        try:
            return _put_etag(await to_the_end(put))
        except Exception as exc:
            if mode == "create" and is_refused_condition(exc):
                # whatever the 409's code (Azure's LeaseIdMissing too): an object is there
                raise PreconditionFailedError("an object exists at this key") from exc
            if mode is None or not isinstance(
                map_obstore_error(exc, self._kind), StorageUnavailableError
            ):
                raise
            # a conditional write whose answer was lost: not resent, and the caller's
            # own retry would be refused by it if it landed; so look
            headers = (options.cache_control, options.content_disposition)
            sent = Sent(body, content_type, metadata, headers, started)
            info = await own_object(
                key,
                sent,
                functools.partial(self._head, key),
                lambda etag: self._stream(key, 0, None, PART_SIZE, etag),
            )
            if info is None:
                raise
            return info.etag

    async def _landed(self, key: str, chunks: Interruptible, content_type: str) -> bool:
        """Whether the upload whose completion was retried is stored: the key holds an
        object of every byte sent, of this type (a write racing ours to the same key
        and landing last is as good: it would have replaced ours)."""
        try:
            info = await self._head(key)
        except Exception:
            return False
        return not chunks.failed and (info.size, info.content_type) == (chunks.sent, content_type)

    async def _load(self, key: str) -> bytes:
        obs, store = self._store()
        result = await obs.get_async(store, key)
        return bytes(await result.bytes_async())

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        obs, store = self._store()
        options: dict[str, Any] = {}
        if if_match is not None:
            options["if_match"] = if_match  # the server answers 412 once it was replaced
        if end is not None:
            if end <= start:
                # an empty slice like bytes[start:end], once the object is known to exist
                await self._check_pinned(key, if_match)
                return
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obs.get_async(store, key, options=options)
        except Exception as exc:
            if if_match is not None and is_precondition_error(exc):
                await self._head(key)  # Azure's 412 for a deleted object: not found
                raise
            if not is_range_error(exc):
                raise
            # the range starts at or past the end: an empty slice like bytes[start:end],
            # once the object is known to exist (and to be that version)
            await self._check_pinned(key, if_match)
            return
        # obstore's chunks are at least this big; the base class cuts them to chunk_size
        async for chunk in result.stream(min_chunk_size=min(chunk_size, PART_SIZE)):
            yield bytes(chunk)

    async def _check_pinned(self, key: str, if_match: str | None) -> None:
        info = await self._head(key)
        if if_match is not None and info.etag != if_match:
            raise PreconditionFailedError("the object changed since that ETag")

    async def _exists(self, key: str) -> bool:
        obs, store = self._store()
        try:
            await obs.head_async(store, key)
        except FileNotFoundError:  # obstore's NotFoundError is one
            return False
        return True

    async def _stat(self, key: str) -> ObjectInfo:
        return await self._head(key)

    async def _delete(self, key: str) -> None:
        obs, store = self._store()
        with contextlib.suppress(FileNotFoundError):  # idempotent: already gone
            await to_the_end(obs.delete_async(store, key), gone_ok=True)

    async def _delete_many(self, keys: list[str]) -> None:
        obs, store = self._store()
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            try:
                # Azure: blob batch requests; GCS: concurrent deletes (object_store's own)
                await to_the_end(obs.delete_async(store, batch), gone_ok=True)
            except FileNotFoundError:
                # a key already gone fails the bulk call (idempotent for us): finish the
                # batch key by key, where a missing key is no error
                await self._delete_each(batch)

    async def _delete_each(self, keys: list[str]) -> None:
        limit = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(key: str) -> None:
            async with limit:
                await self._delete(key)

        results = await asyncio.gather(*(one(key) for key in keys), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _iter_entries(
        self, prefix: str, start_after: str | None, recursive: bool, page_size: int
    ) -> AsyncIterator[_pages.Entry]:
        # the store starts after the cursor (GCS: start-after; object_store filters Azure's
        # listing itself), so a page deep in a folder does not list it from the start
        return _pages.entries(self._iter_files(prefix, start_after), prefix, start_after, recursive)

    async def _iter_files(self, prefix: str, after: str | None = None) -> AsyncIterator[ObjectInfo]:
        obs, store = self._store()
        # object_store matches whole segments: "a/b" lists a/b/..., never a/bc
        where = {"prefix": prefix.rstrip("/") or None, "offset": after}
        pages = obs.list(store, **where, chunk_size=LIST_PAGE)
        # both services list in UTF-8 byte order, which is the order of Python's str
        async for page in pages:
            for meta in page:
                # another tool's "folder/" marker is no object, nor a name too long for a
                # key once the prefix is counted (Azure counts its 1024 in characters)
                if _is_key(meta["path"], self._key_overhead):
                    yield self._info(meta, None)

    async def _list_dirs(self, prefix: str) -> list[str]:
        obs, store = self._store()
        result = await obs.list_with_delimiter_async(store, prefix=prefix.rstrip("/") or None)
        names = (name.rstrip("/") for name in result["common_prefixes"])
        # a folder that can hold a key ("<folder>/x")
        return sorted(name for name in names if _is_key(name, self._key_overhead + 2))

    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> str | None:
        obs, store = self._store()
        if options.cache_control is None and options.content_disposition is None:
            # server-side; the destination keeps the source's type, metadata and headers
            # (object_store's copy answers no ETag: the event stats for it). A move's copy
            # is pinned to what the move found, where it can be signed
            if await self._pinned_copy(src, dst):
                return None
            await to_the_end(obs.copy_async(store, src, dst, overwrite=True))
            await self._copy_done(dst, None)
            return None
        # a header to change: object_store's copy cannot set one, so the bytes go through
        # us, pinned to the source's version, into a write with the new headers
        source = await self._head(src)
        headers = WriteOptions(
            cache_control=options.cache_control or source.cache_control,
            content_disposition=options.content_disposition or source.content_disposition,
        )
        body = self._stream(src, 0, None, PART_SIZE, source.etag)
        return await self._save(
            dst,
            body,
            source.content_type or "application/octet-stream",
            dict(source.metadata),
            headers,
        )

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        if content_type is not None or filename is not None:
            raise StorageConfigError(
                f"{self._kind}: this URL needs the store's own signing key (response headers)"
            )
        obs, store = self._store()
        url: str = await obs.sign_async(store, method, key, timedelta(seconds=expires_in))
        return url

    async def _check(self) -> None:
        obs, store = self._store()
        async for _ in obs.list(store, chunk_size=1):  # the store holds the prefix
            break

    async def _aclose(self) -> None:
        # obstore keeps no connection a caller must close: dropping the store frees its pool
        with self._store_lock:
            self._opened = None


def _put_etag(result: Any) -> str | None:
    """The ETag of a put's answer, as ``stat`` gives it (``None``: not said)."""
    etag = result.get("e_tag") if isinstance(result, Mapping) else None
    return _quoted(etag) if isinstance(etag, str) and etag else None


def _quoted(etag: str | None) -> str | None:
    """An ETag as a HEAD's header gives it (``"..."``): a listing's XML gives it bare
    (GCS, Azure), and the one a listing found must match in ``if_match`` and compare
    equal to what ``stat`` says."""
    if etag is None or etag.startswith(('"', 'W/"')):
        return etag
    return f'"{etag}"'


def _is_key(name: str, reserved_bytes: int) -> bool:
    try:
        validate_key(name, reserved_bytes=reserved_bytes)
    except InvalidKeyError:
        return False
    return True
