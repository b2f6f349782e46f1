"""Local files and URLs of :class:`StorageBackend`: download_file, local_copy, staged_upload,
get_presigned_url.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat as stat_mod
import unicodedata
import uuid
from collections.abc import (
    AsyncIterator,
    Mapping,
)
from pathlib import Path
from typing import final

import aiofiles
import aiofiles.os

from file_storage._http import (
    as_download,
    check_header_value,
    content_disposition,
    public_url,
    served_type,
    shown_inline,
)
from file_storage._keys import KeyLike
from file_storage._metadata import check_content_type
from file_storage._mime import guess_content_type
from file_storage._signing import MAX_PRESIGN_SECONDS
from file_storage._streams import Progress
from file_storage.backends._core import Method
from file_storage.backends._reads import Reads
from file_storage.backends._support import (
    NEW_FILE,
    is_caller_error,
    normalize_metadata,
    run_to_end,
    stop_then_wait,
    temp_folder,
)
from file_storage.backends._write_options import PLAIN
from file_storage.backends._writes import Writes
from file_storage.errors import (
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

_NAMES = 8  # temp file names tried before a download gives up (each taken already)


def _taken(exc: BaseException, tmp: Path) -> bool:
    """Something (a link another user planted?) was at the temp file's name when the
    download made it: nothing there is ours, never written through nor removed."""
    return isinstance(exc, FileExistsError) and exc.filename == str(tmp)


def _give_final_mode(tmp: Path, target: Path) -> None:
    """Give the private (0600) temp file ``tmp`` the permission bits of the file it is
    about to become: those of the file at ``target`` it replaces (a private 0600 file
    stays private), else those a new file there gets (the umask's, or a default ACL's).
    A link at ``target`` is replaced, never followed: its target's bits are not the file's."""
    try:
        found = os.lstat(target)
    except FileNotFoundError:
        found = None
    if found is not None and stat_mod.S_ISREG(found.st_mode):
        mode: int | None = found.st_mode & 0o777
    else:
        mode = _new_file_mode(tmp)
    if mode is not None:
        # a file system without permission bits (FAT on a USB stick) refuses the change,
        # and has none to give: the download goes on
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)


def _new_file_mode(tmp: Path) -> int | None:
    """The permission bits of a new file beside ``tmp``, read from an empty one made for
    that: the umask can only be read by changing it (for every thread of the process),
    and a default ACL of the folder overrides it. ``None``: it could not be made (the
    temp file then stays private)."""
    probe = tmp.with_name(f"{tmp.name}.mode")
    try:
        fd = os.open(probe, NEW_FILE, 0o666)
    except OSError:  # a name taken (a link planted there?) is not ours to look at
        return None
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.remove(probe)


class Transfers(Writes, Reads):
    """The transfers of :class:`~file_storage.StorageBackend`; documented there."""

    #: the base of :meth:`get_public_url` (``None``: not configured) and its setting
    _public_base_url: str | None = None
    _public_setting: str = "STORAGE_LOCAL_PUBLIC_BASE_URL"
    #: a presigned PUT is answered by the library (``signed_url_router`` calls ``save``,
    #: which counts quotas); else the upload goes straight to the store, uncounted
    _presigned_puts_counted: bool = False

    @final
    async def download_file(
        self,
        path: KeyLike,
        local_path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Write the object at ``path`` to the local file ``local_path``.

        Parent folders are created. Bytes go to a temp file beside ``local_path`` that is
        renamed into place once its size is verified, so a failed or cancelled download
        leaves nothing (and a file already at ``local_path`` stays as it was). The temp
        file is private (``0600``) until then; a file it replaces keeps its permission
        bits (a private ``0600`` file stays private), a new one gets the umask's.

        Args:
            progress: called as ``progress(bytes_done, bytes_total)``.

        Returns:
            ``local_path`` as a :class:`pathlib.Path`.

        Raises:
            ObjectNotFoundError: no object at ``path``.
        """
        return await self._download(path, local_path, progress)

    async def _download(
        self,
        path: KeyLike,
        local_path: str | os.PathLike[str],
        progress: Progress | None,
        operation: str = "download_file",
    ) -> Path:
        """download_file's work; its errors name ``operation``, the call the user made
        (``local_copy`` downloads through here too)."""
        key = self._key(path, operation)
        target = Path(local_path)
        with self._translate(operation, key) as call:
            # waited for to its end: a thread still making the folders after its caller
            # was cancelled would make again a temp folder local_copy had just removed
            await run_to_end(aiofiles.os.makedirs(target.parent, exist_ok=True))
            # cut by UTF-8 bytes, never mid-character: a name is at most 255 bytes
            stem = os.fsencode(target.name)[:200].decode("utf-8", "ignore")

            async def fetch() -> int:
                for _ in range(_NAMES):
                    tmp = target.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.part")
                    try:
                        return await fetch_into(tmp)
                    except FileExistsError as exc:
                        if not _taken(exc, tmp):
                            raise
                # no path: the message may reach HTTP clients (local_copy's is the
                # server's own temp folder)
                raise StorageError("no free temp file name beside the download's target")

            async def fetch_into(tmp: Path) -> int:
                try:
                    expected = await self._download_file(key, tmp, progress)
                    written = (await aiofiles.os.stat(tmp)).st_size
                    if written != expected:
                        raise StorageUnavailableError(
                            f"download incomplete: got {written} of {expected} bytes"
                        )
                    await asyncio.to_thread(_give_final_mode, tmp, target)
                    await aiofiles.os.replace(tmp, target)
                except BaseException as exc:
                    if not _taken(exc, tmp):  # else none of what is there is ours
                        with contextlib.suppress(OSError):
                            await aiofiles.os.remove(tmp)
                    raise
                return expected

            # in a task of its own, cancelled once: its clean-up runs whole even when the
            # caller is cancelled again and again (an anyio cancel scope), and ends before
            # the cancellation is raised, so no temp file is left behind
            call.size = await stop_then_wait(fetch())
        return target

    @final
    async def get_presigned_url(
        self,
        path: KeyLike,
        expires_in: int = 3600,
        method: Method = "GET",
        *,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        """Return a URL that lets anyone holding it GET or PUT ``path`` until it expires.

        A GET URL of S3, GCS or Azure (signed with the backend's own key) is served by the
        store, so it is signed with the response's headers: without ``content_type`` and
        ``filename`` the object's type as it is now (a HEAD; its key's guess when there
        is no object yet), pinned, so a page uploaded over it later is served as what the
        URL was made for; a type a browser would run (HTML, SVG, XML: any but images,
        audio, video, PDF, plain text, CSV and JSON) as a download (``attachment``); a
        stored list of types or a script's as ``application/octet-stream``. The local
        and memory backends' router does the same when the URL is used (the type as it is
        then, with ``nosniff`` and a sandbox): a link behaves alike on every backend.

        Args:
            expires_in: seconds, ``1 <= expires_in <= 604800`` (7 days).
            method: ``"GET"`` or ``"PUT"``; a URL for one never works for the other.
            content_type: GET: the ``Content-Type`` of the response (S3
                ``ResponseContentType``), as given: your word for a type you trust (no
                HEAD is made). PUT: a signed condition: the upload must send exactly this
                ``Content-Type`` (else 403), and it is stored.
            filename: GET only: the response is a download named ``filename``
                (``Content-Disposition: attachment``, RFC 6266: any Unicode name), so an
                app can store ``<uuid>.mp4`` and still hand the user ``Отпуск 2026.mp4``.

        Raises:
            ValueError: bad ``expires_in``, ``method``, ``content_type`` or ``filename``
                (``filename`` with PUT).
            StorageConfigError: the backend cannot sign (local or memory without a
                signing key and base URL); or a PUT URL for a key a quota covers, on a
                store the upload reaches without the library (S3, GCS, Azure): its PUT
                takes any size, so the quota could not hold. Use
                :meth:`get_presigned_post` with ``max_bytes`` there.
        """
        key = self._key(path, "get_presigned_url")
        content_type = check_header_value("content_type", content_type, "get_presigned_url", key)
        if filename is not None:
            if not isinstance(filename, str):
                raise TypeError("filename must be a str or None")
            if method == "PUT":
                raise ValueError("filename is for GET URLs (the name of the download)")
            if not filename.strip() or any(unicodedata.category(c) == "Cc" for c in filename):
                raise ValueError("filename must be a non-empty name without control characters")
        if method not in ("GET", "PUT"):
            raise ValueError(f"method must be 'GET' or 'PUT', not {method!r}")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or not 1 <= expires_in <= MAX_PRESIGN_SECONDS
        ):
            raise ValueError(f"expires_in must be an int in [1, {MAX_PRESIGN_SECONDS}] seconds")
        if (
            method == "PUT"
            and not self._presigned_puts_counted
            and await self._quotas.prefixes_covering(key, "get_presigned_url")
        ):
            # S3's PUT signs no size range (only an exact Content-Length) and GCS's and
            # Azure's none: whoever holds the URL could store any size past the quota
            raise StorageConfigError(
                "a presigned PUT reaches the store without the library, which cannot cap "
                "its size, and a quota covers this key: use get_presigned_post(max_bytes=...)"
                " (capped at the quota left), or upload through the application",
                operation="get_presigned_url",
                key=key,
            )
        with self._translate("get_presigned_url", key):
            return await self._presign(key, expires_in, method, content_type, filename)

    async def _served_headers(
        self, key: str, content_type: str | None, filename: str | None
    ) -> tuple[str | None, str | None]:
        """The ``Content-Type`` and ``Content-Disposition`` a GET URL for ``key`` is signed
        with, on a store that serves it without the library (None: the stored one).

        The caller's ``content_type`` or ``filename`` is its word. Else the type is pinned
        to the object's as it is now (its key's guess when there is none yet, or the HEAD
        is denied), so a page uploaded over it later is still served as what the URL was
        made for; and a type a browser would run (HTML, SVG, XML, anything not known to
        be shown inertly) is a download. A stored list of types or a script's is served
        as bytes.
        """
        if content_type is not None or filename is not None:
            return content_type, None if filename is None else content_disposition(filename)
        try:
            info = await self._stat(key)
        except Exception as exc:
            if not (self._not_found(exc) or self._denied(exc)):
                raise
            served, stored = served_type(guess_content_type(key)), None
        else:
            served, stored = served_type(info.content_type), info.content_disposition
        served = served or "application/octet-stream"
        # shown in place, the stored disposition is served as it is then (a name, or a
        # download); else a download, keeping the stored parameters (its file name)
        return served, None if shown_inline(served) else as_download(stored)

    def _denied(self, exc: Exception) -> bool:
        """Whether a hook's ``exc`` is access denied: S3's answer to a HEAD of a missing
        key for a credential without ``s3:ListBucket`` (one without ``s3:GetObject`` can
        sign no GET URL that works anyway)."""
        if isinstance(exc, StorageError) or is_caller_error(exc):
            return isinstance(exc, StoragePermissionError)
        return isinstance(self._map_error(exc, "", None), StoragePermissionError)

    @final
    def get_public_url(self, path: KeyLike) -> str:
        """Return the unsigned URL of ``path`` under the public base URL (a CDN, a public
        bucket, or a route of your app that serves files without a signature).

        Each key segment is percent-encoded (all but RFC 3986's unreserved characters).
        Nothing is checked or sent: the URL works only where the base really serves files.

        Raises:
            StorageConfigError: no public base URL is configured (the message names the
                setting: ``STORAGE_S3_PUBLIC_BASE_URL`` or ``STORAGE_LOCAL_PUBLIC_BASE_URL``).
        """
        key = self._key(path, "get_public_url")
        if not self._public_base_url:
            raise StorageConfigError(
                f"{self._public_setting} is not set (public_base_url=): no public URL",
                operation="get_public_url",
                key=key,
            )
        return public_url(self._public_base_url, key)

    @contextlib.asynccontextmanager
    async def local_copy(self, path: KeyLike) -> AsyncIterator[Path]:
        """Give a local file holding the object, for tools that need a real file (FFmpeg).

        The file is a temp copy removed on exit (the local backend may hand its own file:
        treat it as read-only, a write to it changes the stored object unseen by quota).
        """
        key = self._key(path, "local_copy")
        async with contextlib.AsyncExitStack() as stack:
            # its errors name local_copy, not what the backend does for it; the caller's
            # own errors inside the block are theirs, never translated
            with self._translate("local_copy", key):
                local = await stack.enter_async_context(self._local_copy(key))
            yield local

    @contextlib.asynccontextmanager
    async def staged_upload(
        self,
        path: KeyLike,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Path]:
        """Give a temp file path to write into; it is uploaded to ``path`` on a clean exit.

        On an exception nothing is uploaded and the temp file is removed.

        Raises:
            ObjectNotFoundError: nothing was written to the path. Otherwise as
                :meth:`upload_file`, with ``staged_upload`` as the error's operation.
        """
        key = self._key(path, "staged_upload")
        meta = normalize_metadata(metadata, "staged_upload", key)
        # refused before the caller writes anything
        ctype = check_content_type(content_type or guess_content_type(key), "staged_upload", key)
        async with temp_folder("staged_upload", key) as tmpdir:
            local = tmpdir / (key.rsplit("/", 1)[-1])
            yield local
            if not await aiofiles.os.path.exists(local):
                # no path: the message reaches HTTP clients (a 404 body), and the temp
                # folder is the server's own
                raise ObjectNotFoundError(
                    "nothing was written to the staged file",
                    operation="staged_upload",
                    key=key,
                )
            # its errors name staged_upload, the call the user made, not upload_file
            await self._upload("staged_upload", local, key, ctype, meta, None, PLAIN)

    @contextlib.asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        async with temp_folder("local_copy", key) as tmpdir:
            yield await self._download(key, tmpdir / key.rsplit("/", 1)[-1], None, "local_copy")
