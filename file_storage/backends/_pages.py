"""Listing pages: the order and the cursor rule every backend follows.

A listing is sorted by key and holds what sorts after the cursor ``start_after``:

- with ``recursive=True``, each object whose key sorts after it;
- with ``recursive=False``, the objects directly under the prefix and, in place of
  everything deeper, each immediate sub-folder once, as its key without the trailing
  ``/``. A folder sorts as its key plus ``/`` (S3's common prefixes do), and is listed
  when that place sorts after the cursor: a cursor inside a folder resumes after it.

The cursor is a key, or the place of a folder: its key plus ``/``, which is what a page
ending on a folder hands back (``a/b`` alone could not say whether ``a/b-2`` and
``a/b.txt``, which sort between ``a/b`` and ``a/b/``, were listed yet). It is compared as
a string: one before the prefix starts at the beginning, one after it gives nothing.

Backends with a native way (S3 ``StartAfter``, the local sorted walk, the memory index)
implement ``_iter_entries`` themselves; :func:`entries` is the default built on a full
sorted listing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from file_storage._keys import validate_key
from file_storage._streams import closing
from file_storage.errors import InvalidKeyError
from file_storage.models import ObjectInfo

#: an object, or (``recursive=False`` only) an immediate sub-folder as its key
Entry = ObjectInfo | str


def validate_cursor(path: object, operation: str, reserved_bytes: int) -> str:
    """A key, or a folder's key plus ``/`` (see the module docstring)."""
    if isinstance(path, str) and path.endswith("/"):
        try:
            return validate_key(path[:-1], operation, reserved_bytes=reserved_bytes + 1) + "/"
        except InvalidKeyError as exc:
            exc.key = path
            raise
    return validate_key(path, operation, reserved_bytes=reserved_bytes)


def sort_key(entry: Entry) -> str:
    """Where an entry sorts: an object at its key, a folder at its key plus ``/``."""
    return entry.key if isinstance(entry, ObjectInfo) else entry + "/"


def folder_end(folder: str) -> str:
    """The smallest string after every key under ``folder`` (``/`` + 1 is ``0``)."""
    return folder + "0"


class _Filter:
    """Turns a sorted stream of objects under ``prefix`` into the entries after a cursor."""

    __slots__ = ("last_folder", "prefix", "recursive", "start_after")

    def __init__(self, prefix: str, start_after: str | None, recursive: bool) -> None:
        self.prefix = prefix
        self.start_after = start_after
        self.recursive = recursive
        self.last_folder: str | None = None

    def feed(self, info: ObjectInfo) -> Entry | None:
        if self.start_after is not None and info.key <= self.start_after:
            return None
        if self.recursive:
            return info
        name, slash, _ = info.key[len(self.prefix) :].partition("/")
        if not slash:
            return info
        folder = self.prefix + name
        if folder == self.last_folder:
            return None
        self.last_folder = folder
        after = self.start_after is None or folder + "/" > self.start_after
        return folder if after else None


async def entries(
    infos: AsyncIterator[ObjectInfo], prefix: str, start_after: str | None, recursive: bool
) -> AsyncIterator[Entry]:
    """The entries after ``start_after`` of a full sorted listing of ``prefix``."""
    keep = _Filter(prefix, start_after, recursive)
    async with closing(infos):
        async for info in infos:
            entry = keep.feed(info)
            if entry is not None:
                yield entry


def entries_of(
    infos: Iterable[ObjectInfo], prefix: str, start_after: str | None, recursive: bool
) -> list[Entry]:
    """:func:`entries` of a sorted list."""
    keep = _Filter(prefix, start_after, recursive)
    return [entry for info in infos if (entry := keep.feed(info)) is not None]


async def still_listed(listing: AsyncIterator[Entry], keys: list[str]) -> list[str]:
    """Which of the sorted ``keys`` a recursive ``listing`` starting before the first one
    still holds (read up to the last one)."""
    wanted = set(keys)
    found: list[str] = []
    async with closing(listing):
        async for entry in listing:
            place = sort_key(entry)
            if place > keys[-1]:
                break
            if place in wanted:
                found.append(place)
    return found


async def merged(listing: AsyncIterator[Entry], extra: list[Entry]) -> AsyncIterator[Entry]:
    """Merge the sorted ``extra`` into the sorted ``listing``; at one place ``extra`` wins."""
    i = 0
    async with closing(listing):
        async for entry in listing:
            here = sort_key(entry)
            while i < len(extra) and sort_key(extra[i]) <= here:
                i += 1
                yield extra[i - 1]
            if i == 0 or sort_key(extra[i - 1]) != here:
                yield entry
    for entry in extra[i:]:
        yield entry
