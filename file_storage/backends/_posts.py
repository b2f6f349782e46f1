"""Size-capped browser uploads: :meth:`StorageBackend.get_presigned_post`."""

from __future__ import annotations

from typing import final

from file_storage._keys import KeyLike
from file_storage._mime import guess_content_type
from file_storage._signing import MAX_PRESIGN_SECONDS
from file_storage.backends._core import BackendCore
from file_storage.errors import InvalidKeyError, StorageConfigError, StorageQuotaExceededError
from file_storage.models import PresignedPost

# S3 replaces it in every form field with the name of the uploaded file, and botocore
# signs a key ending in it for every key starting with the rest ("starts-with"): a form
# for "in/${filename}" would let the browser write any key under in/, another user's too
_FILENAME_VARIABLE = "${filename}"


class Posts(BackendCore):
    """The form uploads of :class:`~file_storage.StorageBackend`; documented there."""

    @final
    async def get_presigned_post(
        self,
        path: KeyLike,
        *,
        expires_in: int = 3600,
        max_bytes: int | None = None,
        content_type: str | None = None,
    ) -> PresignedPost:
        """Return a form upload to ``path`` a browser can send straight to storage.

        The browser posts ``multipart/form-data`` to ``url`` with ``fields`` (in order)
        and then the file as the field ``file``. The store refuses a file larger than the
        cap, ``min(max_bytes, quota left when signed)`` counting the backend-wide quota
        and every prefix quota covering ``path`` (S3: a POST policy with
        ``content-length-range``; local and memory: ``signed_url_router`` checks it while
        reading, and stores nothing when refused). Without either the cap is S3's own
        5 GiB on S3, none on local and memory. Quotas still apply when the upload lands.

        Args:
            expires_in: seconds, ``1 <= expires_in <= 604800`` (7 days).
            max_bytes: the largest file accepted, bytes ``>= 0``.
            content_type: the stored content type; guessed from the key when ``None``.
                It is signed: the uploader cannot change it.

        Returns:
            ``PresignedPost(url, fields)``.

        Raises:
            InvalidKeyError: ``path`` holds ``${filename}``, which S3 replaces with the
                name of the uploaded file (the browser would choose the key); refused on
                every backend alike.
            ValueError: bad ``expires_in``, ``max_bytes`` or ``content_type`` (one holding
                ``${filename}`` included).
            StorageQuotaExceededError: a quota covering ``path`` is already full.
            StorageConfigError: the backend cannot sign (local or memory without a signing
                key and base URL).
        """
        key = self._key(path, "get_presigned_post")
        if _FILENAME_VARIABLE in key.lower():
            raise InvalidKeyError(
                f"invalid key: {_FILENAME_VARIABLE} in a form's key is the uploaded file's "
                "name on S3, which the browser chooses",
                operation="get_presigned_post",
                key=key,
            )
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or not 1 <= expires_in <= MAX_PRESIGN_SECONDS
        ):
            raise ValueError(f"expires_in must be an int in [1, {MAX_PRESIGN_SECONDS}] seconds")
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
        ):
            raise ValueError("max_bytes must be an int >= 0 or None")
        if content_type is not None and (
            not isinstance(content_type, str)
            or not content_type.isascii()
            or not content_type.isprintable()
            or "/" not in content_type
        ):
            raise ValueError("content_type must be a printable ASCII MIME type such as text/csv")
        if content_type is not None and _FILENAME_VARIABLE in content_type.lower():
            raise ValueError(f"content_type must not hold {_FILENAME_VARIABLE} (S3 replaces it)")
        with self._translate("get_presigned_post", key):
            cap = await self._post_cap(key, max_bytes)
            ctype = content_type or guess_content_type(key)
            return await self._presign_post(key, expires_in, cap, ctype)

    async def _post_cap(self, key: str, max_bytes: int | None) -> int | None:
        """``min(max_bytes, what each quota covering key has left)``; None: no cap."""
        cap = max_bytes
        for prefix in await self._quotas.prefixes_covering(key, "get_presigned_post"):
            try:
                usage = await self._quotas.usage(prefix)
            except LookupError:  # a shared ledger: another process removed that quota
                continue
            assert usage.limit is not None
            # overwriting counts only the difference (the size is known once scanned)
            left = usage.limit - usage.used + (self._quotas.size_of(key) or 0)
            if left <= 0:
                raise StorageQuotaExceededError(
                    used=usage.used, limit=usage.limit, requested=0, prefix=prefix
                )
            cap = left if cap is None else min(cap, left)
        return cap

    async def _presign_post(
        self, key: str, expires_in: int, max_bytes: int | None, content_type: str
    ) -> PresignedPost:
        """Sign a form upload of at most ``max_bytes`` (None: no cap) stored as
        ``content_type``."""
        raise StorageConfigError(f"{type(self).__name__} cannot sign form uploads")
