"""migrate's "never onto itself" check: whether two backends store the folder moved in
one place (the same folder or bucket prefix, or one inside the other)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from file_storage.backends.base import StorageBackend
from file_storage.backends.local import LocalStorageBackend

__all__ = ["overlap"]


def overlap(source: StorageBackend, dest: StorageBackend, prefix: str) -> bool:
    """Whether the objects under ``prefix`` of both backends share a place in one store
    (the same folder, or one inside the other), as far as the backends say where they
    store (a bucket and prefix, a root folder)."""
    places = [backend._store_place() for backend in (source, dest)]
    if None in places:
        return False
    folder = prefix.strip("/")
    a, b = ((place or "").rstrip("/") + (f"/{folder}" if folder else "") for place in places)
    if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
        return True
    if isinstance(source, LocalStorageBackend) and isinstance(dest, LocalStorageBackend):
        x, y = Path(source._folder()), Path(dest._folder())
        return _holds_by_identity(x, y, folder) or _holds_by_identity(y, x, folder)
    return False


def _holds_by_identity(outer: Path, inner: Path, folder: str) -> bool:
    """Whether ``inner/folder`` is ``outer/folder``, or one holds the other, found by the
    folders' identity (device and inode) rather than their paths: through a bind mount,
    or names a case-insensitive file system takes for one, which paths do not show."""
    try:
        target = os.stat(outer)
    except OSError:
        return False  # no source folder yet: nothing there to lose
    below: list[str] = []  # inner's path below the folder being looked at
    path = Path(os.path.realpath(inner))
    while True:
        with contextlib.suppress(OSError):
            found = os.stat(path)
            if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                # inner is outer/below: does outer/below/folder nest with outer/folder?
                p = [*reversed(below), *folder.split("/")] if folder else list(reversed(below))
                q = folder.split("/") if folder else []
                return p[: len(q)] == q or q[: len(p)] == p
        if path.parent == path:
            return False
        below.append(path.name)
        path = path.parent
