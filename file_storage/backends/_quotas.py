"""The quota API of :class:`StorageBackend`: set_quota, get_usage, refresh_usage."""

from __future__ import annotations

from typing import final

from file_storage._keys import KeyLike
from file_storage.backends._core import (
    BackendCore,
)
from file_storage.models import Usage


class Quotas(BackendCore):
    """The quotas of :class:`~file_storage.StorageBackend`; documented there."""

    @final
    def set_quota(self, prefix: KeyLike, max_bytes: int | None) -> None:
        """Cap the bytes stored under the folder ``prefix`` (``None`` removes the cap).

        ``""`` is the backend-wide quota (``max_size_bytes``). Every write checks every
        quota that covers its key. Usage is learned by one listing on first need.
        """
        self._quotas.set(self._prefix(prefix, "set_quota"), max_bytes)

    @final
    async def get_usage(self, prefix: KeyLike = "") -> Usage:
        """Return the bytes used under ``prefix`` (writes in flight included) and its limit."""
        folder = self._prefix(prefix, "get_usage")
        with self._translate("get_usage", folder):
            if self._quotas.has(folder):
                try:
                    return await self._quotas.usage(folder)
                except LookupError:  # a shared ledger only knows on asking: no quota there
                    pass
            used = await self._total_size(folder)
            return Usage(prefix=folder, used=used, limit=None)

    @final
    async def refresh_usage(self, prefix: KeyLike | None = None) -> None:
        """Re-scan quota usage (all quotas, or the one at ``prefix``) to see foreign writes.

        Without ``prefix`` it also removes what crashed writers left behind (on local disk,
        other processes' temp files older than ``temp_max_age_seconds``), quota or not.
        """
        folder = None if prefix is None else self._prefix(prefix, "refresh_usage")
        with self._translate("refresh_usage", folder):
            if folder is None:
                await self._sweep()
            await self._quotas.refresh(folder)
