"""The presign hooks of the backends whose URLs ``signed_url_router`` answers.

The local and memory backends sign URLs and form uploads themselves, with an HMAC key
(``STORAGE_LOCAL_SIGNING_KEY``), for the FastAPI router the app mounts at ``base_url``
(``STORAGE_LOCAL_BASE_URL``); the router checks them with the same key and binding: the
base URL's path and the store the backend serves (:meth:`RouterSigned._signing_place`),
so one key shared by two backends signs nothing the other's router accepts.
"""

from __future__ import annotations

import uuid

from pydantic import SecretStr

from file_storage._post_policy import presign_post
from file_storage._settings_common import check_base_url, checked
from file_storage._signing import binding, presign
from file_storage._signing import signing_key as wrap_signing_key
from file_storage.backends._core import Method
from file_storage.backends.base import StorageBackend
from file_storage.errors import StorageConfigError
from file_storage.models import PresignedPost

__all__ = ["RouterSigned", "refused_hint"]


def refused_hint(backend: StorageBackend) -> str:
    """What a refused signature's answer adds for ``backend``: why a URL it did not sign
    may be a genuine one (see :attr:`RouterSigned._refused_hint`)."""
    return backend._refused_hint if isinstance(backend, RouterSigned) else ""


class RouterSigned(StorageBackend):
    """A backend whose presigned URLs and form uploads ``signed_url_router`` serves."""

    _base_url: str | None = None
    _presigned_puts_counted = True  # the router's PUT calls save(), which counts quotas
    _signing_key: SecretStr | None = None
    _signing_id = ""  # this instance's own store, for backends that name none (memory)
    # added to a refused signature's answer where a genuine URL is refused by design (a
    # memory store answers only its own: a server's other worker processes refuse them)
    _refused_hint = ""

    def _set_signing(self, base_url: str | None, signing_key: str | SecretStr | None) -> None:
        """Keep the router's address and the key (too short: StorageConfigError)."""
        if (base_url is None) != (signing_key is None):
            # as the settings: half of it would build a backend whose every presign fails
            raise StorageConfigError(
                "base_url and signing_key (STORAGE_LOCAL_BASE_URL and "
                "STORAGE_LOCAL_SIGNING_KEY): set both to sign URLs, or neither"
            )
        self._base_url = checked("base_url", check_base_url, base_url)
        self._signing_key = wrap_signing_key(signing_key)
        self._signing_id = uuid.uuid4().hex

    async def _signing_place(self) -> str:
        """The store this backend serves, as its signatures name it: two backends name
        one only when they serve the same objects. Here the instance itself (a memory
        backend's objects live in it); the local backend names its root folder."""
        return f"instance:{self._signing_id}"

    async def _signing_binding(self) -> str:
        """What this backend's URLs and forms are bound to, and its router checks."""
        return binding(self._base_url or "", await self._signing_place())

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        return presign(
            self._base_url,
            self._signing_key,
            key,
            method,
            expires_in,
            content_type,
            filename,
            place=await self._signing_place(),
        )

    async def _presign_post(
        self, key: str, expires_in: int, max_bytes: int | None, content_type: str
    ) -> PresignedPost:
        return presign_post(
            self._base_url,
            self._signing_key,
            key,
            expires_in,
            max_bytes,
            content_type,
            place=await self._signing_place(),
        )
