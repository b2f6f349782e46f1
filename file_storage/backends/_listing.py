"""Listing pages for web APIs: :meth:`StorageBackend.list_page` (see ``_pages`` for the rule)."""

from __future__ import annotations

from typing import final

from file_storage._keys import KeyLike
from file_storage._streams import closing
from file_storage.backends._core import BackendCore
from file_storage.backends._pages import validate_cursor
from file_storage.models import ListPage, ObjectInfo


class Listings(BackendCore):
    """The paged listing of :class:`~file_storage.StorageBackend`; documented there."""

    def _cursor(self, start_after: KeyLike, operation: str) -> str:
        return validate_cursor(start_after, operation, self._key_overhead)

    @final
    async def list_page(
        self,
        prefix: KeyLike = "",
        *,
        limit: int = 1000,
        start_after: KeyLike | None = None,
        recursive: bool = True,
    ) -> ListPage:
        """Return one page of the listing of ``prefix``, for a web API.

        Pages are sorted by key; a page ends where the next one starts, and the cursor is a
        key, so it works the same on every backend and stays right while others write: a
        key that exists throughout is listed exactly once whatever is saved or deleted
        between pages.

        Args:
            limit: at most this many entries (files and folders together), ``>= 1``.
            start_after: the cursor: ``next_start_after`` of the previous page (``None``:
                the first page), or any key (compared as a string: one before ``prefix``
                starts at the beginning, one after it gives an empty page).
            recursive: ``False``: only the objects directly under ``prefix``, and its
                immediate sub-folders in ``dirs``, interleaved in key order where a
                folder sorts as its key plus ``/``. A page that ends on a folder hands
                back that place, the folder's key plus ``/``, as its cursor: the next
                page starts after everything in the folder.

        Returns:
            ``ListPage(files, dirs, next_start_after)``; ``next_start_after`` is ``None``
            on the last page.

        Raises:
            InvalidKeyError: a bad ``prefix`` or ``start_after``.
            ValueError: ``limit < 1``.
        """
        folder = self._prefix(prefix, "list_page")
        after = None if start_after is None else self._cursor(start_after, "list_page")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError("limit must be an int")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not isinstance(recursive, bool):
            raise TypeError("recursive must be a bool")
        files: list[ObjectInfo] = []
        dirs: list[str] = []
        last: str | None = None
        with self._translate("list_page", folder):
            # one entry more than the page: it says whether there is a next page
            entries = self._iter_entries(folder, after, recursive, limit + 1)
            async with closing(entries):
                async for entry in entries:
                    if len(files) + len(dirs) == limit:
                        return ListPage(files, dirs, last)
                    if isinstance(entry, ObjectInfo):
                        files.append(entry)
                        last = entry.key
                    else:
                        dirs.append(entry)
                        last = entry + "/"  # where the folder sorts
        return ListPage(files, dirs, None)
