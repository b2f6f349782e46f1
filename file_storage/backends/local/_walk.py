"""The local backend's folder walk: sorted, batched, through directory descriptors.

Each folder is opened with ``O_NOFOLLOW`` relative to its parent's descriptor and listed
with ``os.scandir(fd)``. In-root symlinks are followed explicitly (see ``local._fs``); a
folder already on the path being walked, by ``(st_dev, st_ino)``, is skipped, so a link
loop (``a/loop -> ..``) ends instead of failing with ``ELOOP``. A folder that cannot be
read (permission denied, or gone) is logged and skipped: one bad folder never fails a
listing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_mod
from bisect import bisect_right
from collections.abc import Callable, Iterator

from file_storage._keys import MAX_KEY_BYTES, is_valid_segment
from file_storage.backends.local._fs import O_DIR, Root, lexical, open_dir, open_object
from file_storage.backends.local._io import TMP_MARK, is_own_tmp, is_tmp
from file_storage.backends.local._meta import META_DIR
from file_storage.backends.local._versions import VERSIONS_DIR
from file_storage.errors import ObjectNotFoundError, StorageError

logger = logging.getLogger("file_storage")

SCAN_BATCH = 1000  # keys handed back per thread hop while iterating

# called with (folder descriptor, real segments of the folder, entry name, its lstat)
TmpSeen = Callable[[int, list[str], str, os.stat_result], None]
# one listed entry: (key, is_dir, name in the folder, in-root target segments of a link)
_Entry = tuple[str, bool, str, list[str] | None]


class _Frame:
    __slots__ = ("entries", "fd", "id", "where")

    def __init__(self, fd: int, where: list[str], ident: tuple[int, int]) -> None:
        self.fd = fd
        self.where = where
        self.id = ident
        self.entries: Iterator[_Entry] = iter(())


class Walk:
    """A sorted depth-first walk of the folder ``prefix``, handing back keys in batches.

    Keys come out in plain ``sorted()`` order. ``on_tmp`` is told about every temp file met.
    Call :meth:`close` (or exhaust it) to release its descriptors.

    ``start_after``: only what sorts after it, by the rule of ``_pages``; each folder
    level is listed and bisected, and only folders that can hold later keys are entered,
    so a walk deep into a big tree costs about what its first page does.
    ``recursive=False``: no folder is entered; each immediate sub-folder that sorts after
    the cursor and holds a key comes back in its place as ``(key + "/", None)`` (keys
    never end in ``/``).
    """

    def __init__(
        self,
        root: Root,
        prefix: str,
        with_stat: bool,
        on_tmp: TmpSeen | None = None,
        *,
        start_after: str | None = None,
        recursive: bool = True,
    ) -> None:
        self.root = root
        self.with_stat = with_stat
        self.on_tmp = on_tmp
        self.start_after = start_after
        self.recursive = recursive
        self.stack: list[_Frame] = []
        parts = prefix.rstrip("/").split("/") if prefix else []
        try:
            fd, where = open_dir(root, parts)
        except ObjectNotFoundError:
            return
        self._push(fd, where, prefix)

    def _push(self, fd: int, where: list[str], key_prefix: str) -> None:
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        if any(f.id == ident for f in self.stack):  # a loop: this folder is being walked
            os.close(fd)
            return
        frame = _Frame(fd, where, ident)
        self.stack.append(frame)
        frame.entries = iter(self._listing(frame, key_prefix))

    def _skip(self, where: list[str], exc: OSError) -> None:
        logger.warning(
            "skipped folder %r while listing: %s",
            "/".join(where) or ".",
            exc.strerror or type(exc).__name__,
            extra={"folder": "/".join(where)},
        )

    def _listing(self, frame: _Frame, key_prefix: str) -> list[_Entry]:
        entries: list[_Entry] = []
        try:
            with os.scandir(frame.fd) as it:
                for e in it:
                    name = e.name
                    if is_tmp(name):
                        if self.on_tmp is not None:
                            with contextlib.suppress(OSError):
                                st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
                                self.on_tmp(frame.fd, frame.where, name, st)
                        continue
                    if not is_valid_segment(name):
                        continue
                    key = key_prefix + name
                    if e.is_symlink():
                        link = self._follow(frame, name)
                        if link is not None and _reachable(key, link[0]):
                            entries.append((key, link[0], name, link[1]))
                    elif e.is_dir(follow_symlinks=False) and _reachable(key, True):
                        entries.append((key, True, name, None))
                    elif e.is_file(follow_symlinks=False) and _reachable(key, False):
                        entries.append((key, False, name, None))
        except OSError as exc:
            self._skip(frame.where, exc)
            return []
        # a folder sorts as "name/" so the walk yields keys in plain sorted() order
        entries.sort(key=lambda e: e[0] + "/" if e[1] else e[0])
        return entries if self.start_after is None else self._after(entries)

    def _after(self, entries: list[_Entry]) -> list[_Entry]:
        """The entries that are, or hold, keys after the cursor (a suffix of the level)."""
        cursor = self.start_after
        assert cursor is not None
        first = bisect_right(entries, cursor, key=lambda e: e[0] + "/" if e[1] else e[0])
        before = entries[first - 1] if first else None
        inside = before is not None and before[1] and cursor.startswith(before[0] + "/")
        if self.recursive and inside:
            first -= 1  # the folder the cursor is in (before it, then): its later keys follow
        return entries[first:]

    def _follow(self, frame: _Frame, name: str) -> tuple[bool, list[str]] | None:
        """Is the in-root link ``name`` a folder? ``None``: it leads out, dangles or loops."""
        try:
            target = lexical(self.root, frame.where, os.readlink(name, dir_fd=frame.fd))
            fd, _ = open_dir(self.root, target)
        except ObjectNotFoundError:  # not a folder (or missing): a file, then?
            try:
                found = open_object(self.root, "/".join([*frame.where, name]))
            except (StorageError, OSError):
                return None
            found.close()
            return False, target
        except (StorageError, OSError):
            return None
        os.close(fd)
        return True, target

    def _stat(self, frame: _Frame, name: str, link: list[str] | None) -> os.stat_result | None:
        try:
            if link is None:
                st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
                return st if stat_mod.S_ISREG(st.st_mode) else None
            found = open_object(self.root, "/".join(link))
            found.close()
            return found.st
        except (StorageError, OSError):  # deleted or swapped while we walked
            return None

    def _enter(self, frame: _Frame, key: str, name: str, link: list[str] | None) -> None:
        try:
            if link is None:
                fd, where = os.open(name, O_DIR, dir_fd=frame.fd), [*frame.where, name]
            else:
                fd, where = open_dir(self.root, link)
        except (StorageError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                self._skip([*frame.where, name], exc)
            return
        self._push(fd, where, key + "/")

    def batch(self, limit: int = SCAN_BATCH) -> list[tuple[str, os.stat_result | None]]:
        out: list[tuple[str, os.stat_result | None]] = []
        while self.stack and len(out) < limit:
            frame = self.stack[-1]
            item = next(frame.entries, None)
            if item is None:
                self.stack.pop()
                os.close(frame.fd)
                continue
            key, is_dir, name, link = item
            if is_dir and not self.recursive:
                if self._holds_key(key):
                    out.append((key + "/", None))
            elif is_dir:
                self._enter(frame, key, name, link)
            elif self.with_stat:
                st = self._stat(frame, name, link)
                if st is not None:
                    out.append((key, st))
            else:
                out.append((key, None))
        return out

    def _holds_key(self, folder: str) -> bool:
        """Does ``folder`` hold a key? (Empty folders are never listed.)"""
        walk = Walk(self.root, folder + "/", False)
        try:
            return bool(walk.batch(1))
        finally:
            walk.close()

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop().fd)


def _reachable(key: str, is_dir: bool) -> bool:
    """Is ``key`` a key, or a folder that can hold one (``key/x``), within the key
    grammar's 1024 bytes? Other tools' files deeper than that are no objects: a listing
    never hands back a key that ``load`` would refuse."""
    return len(key.encode()) + (2 if is_dir else 0) <= MAX_KEY_BYTES


def tmp_watcher(max_age: float, now: float, foreign: list[int]) -> TmpSeen:
    """Removes other processes' temp files older than ``max_age``; sizes the live ones."""

    def seen(dir_fd: int, where: list[str], name: str, st: os.stat_result) -> None:
        if is_own_tmp(name) or not stat_mod.S_ISREG(st.st_mode):
            return  # ours are reserved by the writes in flight
        if now - st.st_mtime > max_age:
            with contextlib.suppress(FileNotFoundError):  # its writer renamed it meanwhile
                os.unlink(name, dir_fd=dir_fd)
                logger.info(
                    "removed a stale temp file (%d bytes) in %r",
                    st.st_size,
                    "/".join(where) or ".",
                )
            return
        foreign.append(st.st_size)

    return seen


def sweep_meta(root: Root, seen: TmpSeen) -> None:
    """Show ``seen`` the temp files of the sidecar and versions folders (left by a crash
    mid-write); listings never enter them."""
    for folder in (META_DIR, VERSIONS_DIR):
        try:
            fd, where = open_dir(root, [folder], follow=False)
        except (StorageError, OSError):
            continue
        try:
            _sweep_tree(fd, where, seen)
        finally:
            os.close(fd)


def _sweep_tree(fd: int, where: list[str], seen: TmpSeen) -> None:
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError:
        return
    for name, is_dir in entries:
        if TMP_MARK in name:
            with contextlib.suppress(OSError):
                seen(fd, where, name, os.stat(name, dir_fd=fd, follow_symlinks=False))
        elif is_dir:
            with contextlib.suppress(OSError):
                sub = os.open(name, O_DIR, dir_fd=fd)
                try:
                    _sweep_tree(sub, [*where, name], seen)
                finally:
                    os.close(sub)
