"""Versions on local disk: prior versions of each key, kept beside the objects, hidden.

The versioning state is the file ``<root>/.file_storage\\versioning`` (``enabled`` or
``suspended``; absent: never enabled). Prior versions of key ``a/b/c.txt`` live in
``<root>/.file_storage\\versions/a/b/\\<h>/`` (``h``: sha256 of ``c.txt``): the folders of
the key mirrored, so a prefix quota scans only its own part, and one folder per key whose
name starts with a backslash, so it never clashes with a key's folder. A backslash is
banned from keys: no key reaches any of it, and listings never show it. That folder holds

- ``name``: the key's last segment (for scans);
- ``current``: the version id of the key's live file, by file version (``ino``,
  ``mtime``, ``size``, as the sidecar): a file it does not name is the ``"null"`` version;
- ``v-<seq>-<id>``: a prior version, a hard link to the file that was replaced or deleted
  (no bytes copied), and ``v-<seq>-<id>.json`` with its content type and metadata when
  they were not the defaults. ``seq`` orders them (nanoseconds when it was kept).

A write keeps the replaced file just before its rename, inside the key's lock and the
write's gate, and takes it back when the rename fails; a crash in between leaves a link to
the live file itself, which listings recognise (same inode) and ignore. Everything goes
through directory descriptors without following links, like the rest of the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import re
import stat as stat_mod
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from file_storage._json import parse_json
from file_storage._quota.ledger import VERSION_SEP
from file_storage.backends._version_hooks import Versioning
from file_storage.backends.base import StorageBackend
from file_storage.backends.local import _meta as meta_file
from file_storage.backends.local._fs import (
    _LINK_ERRNOS,
    O_DIR,
    O_READ,
    Found,
    Root,
    open_dir,
    open_object,
    open_parent,
    read_small,
    remove_empty_parents,
    write_small,
)
from file_storage.backends.local._io import gated, in_pool, read_batch, to_the_end
from file_storage.backends.local._meta import Meta, key_locks
from file_storage.errors import ObjectConflictError, ObjectNotFoundError, StorageError
from file_storage.models import ObjectInfo, ObjectVersion

if TYPE_CHECKING:
    from file_storage.backends.local._io import Gate

VERSIONS_DIR = ".file_storage\\versions"
STATE_FILE = ".file_storage\\versioning"
_CURRENT_KEPT = 4  # live-file stamps remembered per key (a reader may hold an older one)
# The only names and ids this backend gives: ``uuid4().hex`` or "null", after a 20-digit
# nanosecond sequence. Anything else in a key's folder (a record's temp file while it is
# written, a name another process planted) is no version: never listed, read or restored,
# and a caller's id of another form is no such version before any path is looked at.
_ID = "(?:[0-9a-f]{32}|null)"
_KEPT_NAME = re.compile(rf"v-([0-9]{{20}})-({_ID})")
_VERSION_ID = re.compile(_ID)


def is_version_id(version_id: str) -> bool:
    """Whether ``version_id`` has the form of an id this backend gives."""
    return _VERSION_ID.fullmatch(version_id) is not None


# ------------------------------------------------------------------ small files


def _read_record(dir_fd: int, name: str) -> tuple[bool, bytes | None]:
    """``(present, bytes)`` of the record ``name``: ``(False, None)`` when it is missing,
    ``(True, None)`` when a link, FIFO or folder is in its place. Any other failure to
    read it (no descriptor left) raises: a record that is there is never taken as absent,
    which would keep no version of a write (the state) or give a version another id."""
    try:
        return True, read_small(dir_fd, name)
    except FileNotFoundError:
        return False, None
    except OSError as exc:
        if exc.errno not in _LINK_ERRNOS:
            raise
        return True, None  # a link: refused, never followed


def _read_text(dir_fd: int, name: str) -> str | None:
    _, data = _read_record(dir_fd, name)
    return None if data is None else data.decode("utf-8", "replace")


def _write_text(root: Root, dir_fd: int, name: str, text: str) -> None:
    write_small(root, dir_fd, name, text.encode())


def read_state(root: Root) -> Versioning:
    """Absent: never enabled. A state that is there but is no record (a link, FIFO or
    folder put in its place) reads as suspended, which keeps every version with an id."""
    present, data = _read_record(root.fd(), STATE_FILE)
    if not present:
        return "off"
    return "enabled" if data is not None and data.strip() == b"enabled" else "suspended"


def write_state(root: Root, enabled: bool) -> None:
    _write_text(root, root.fd(), STATE_FILE, "enabled" if enabled else "suspended")


# ------------------------------------------------------------------ one key's folder


def _folder(key: str) -> list[str]:
    parts = key.split("/")
    digest = hashlib.sha256(parts[-1].encode()).hexdigest()[:40]
    return [VERSIONS_DIR, *parts[:-1], "\\" + digest]


class _Kept(NamedTuple):
    seq: str
    version_id: str
    name: str


def _kept(dir_fd: int) -> list[_Kept]:
    """The prior versions in a key's folder, oldest first."""
    out = []
    with os.scandir(dir_fd) as it:
        for e in it:
            # exactly the names keeping() gives, else not one of ours: never a version
            if (found := _KEPT_NAME.fullmatch(e.name)) is not None:
                out.append(_Kept(found[1], found[2], e.name))
    out.sort()
    return out


def _current_record(dir_fd: int) -> tuple[dict[str, str], bool]:
    """The ``current`` record, and whether it is damaged (there, but not one we wrote:
    a FIFO, a link, not JSON, an id of no form we give), which makes the live file's id
    unknown."""
    present, data = _read_record(dir_fd, "current")
    if not present:
        return {}, False
    try:
        raw = parse_json(data.decode("utf-8", "replace")) if data is not None else None
    except ValueError:  # nested too deeply among them
        raw = None
    if not isinstance(raw, dict) or not all(
        isinstance(v, str) and is_version_id(v) for v in raw.values()
    ):
        return {}, True
    return {str(k): v for k, v in raw.items()}, False


def _current(dir_fd: int) -> dict[str, str]:
    return _current_record(dir_fd)[0]


def _meta_of(dir_fd: int, entry: _Kept) -> Meta | None:
    text = _read_text(dir_fd, entry.name + ".json")
    if not text:
        return None
    try:
        return meta_file.parse(parse_json(text))
    except ValueError:  # nested too deeply among them
        return None


class _Key:
    """One key's live file and prior versions, read under its folder's descriptor."""

    def __init__(self, root: Root, key: str, *, create: bool = False) -> None:
        self.root = root
        self.key = key
        self.fd = -1
        self.where = _folder(key)
        try:
            self.fd, _ = open_dir(root, self.where, create=create, follow=False)
        except ObjectNotFoundError:
            pass
        except ObjectConflictError as exc:
            # not the key's own conflict (it lies under no object): said as what it is
            raise StorageError(
                "a file put in the backend's versions folder is in the way of this key's versions"
            ) from exc
        if create and _read_text(self.fd, "name") is None:
            _write_text(root, self.fd, "name", key.split("/")[-1])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def live(self) -> Found | None:
        try:
            return open_object(self.root, self.key)
        except StorageError:
            return None

    def live_id(self, st: os.stat_result) -> str:
        if self.fd < 0:
            return "null"
        return _current(self.fd).get(meta_file.stamp(st), "null")

    def kept(self, live: os.stat_result | None) -> list[_Kept]:
        """Prior versions, oldest first; a link to the live file kept as the live
        version itself (a crash before the rename) is left out. One file may be two
        versions: a key's object moved away (kept as a prior version: a link, no bytes
        copied) and moved back is the new latest, and that prior version too."""
        if self.fd < 0:
            return []
        seen = set() if live is None else {(live.st_dev, live.st_ino, self.live_id(live))}
        out = []
        for entry in _kept(self.fd):
            try:
                st = os.stat(entry.name, dir_fd=self.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                continue  # put there by someone else: never a version
            if (st.st_dev, st.st_ino, entry.version_id) not in seen:
                seen.add((st.st_dev, st.st_ino, entry.version_id))
                out.append(entry)
        return out

    def remove(self, entry: _Kept) -> None:
        for name in (entry.name, entry.name + ".json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.fd)

    def prune(self) -> None:
        """Remove the key's folder when it keeps no version any more."""
        if self.fd < 0 or _kept(self.fd):
            return
        for name in ("name", "current"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.fd)
        self.close()
        remove_empty_parents(self.root, self.where)


@contextlib.contextmanager
def keeping(root: Root, key: str, new_stamp: str | None) -> Iterator[None]:
    """Around the rename (``new_stamp``: the new file's) or unlink (``None``) that replaces
    the live file of ``key``: keep it as a prior version when versioning says so. Call
    with the key's lock (``key_locks``) held."""
    state = read_state(root)
    if state == "off":
        yield
        return
    folder = _Key(root, key, create=True)
    live = folder.live()
    kept: _Kept | None = None
    try:
        try:
            damaged = folder.fd >= 0 and _current_record(folder.fd)[1]
            if live is not None:
                live_id = folder.live_id(live.st)
                if live_id == "null" and damaged:
                    # its id is unknown: keep it under a new one, never dropped as "null"
                    live_id = uuid.uuid4().hex
                if state == "enabled" or live_id != "null":
                    kept = _Kept(f"{time.time_ns():020d}", live_id, "")
                    kept = kept._replace(name=f"v-{kept.seq}-{kept.version_id}")
                    # the real file (a link to it was resolved by open_object), never a link
                    os.link(
                        live.name,
                        kept.name,
                        src_dir_fd=live.dir_fd,
                        dst_dir_fd=folder.fd,
                        follow_symlinks=False,
                    )
                    meta = meta_file.lookup(root, key, live.st)
                    if meta is not None:
                        text = json.dumps(meta._asdict())
                        _write_text(root, folder.fd, kept.name + ".json", text)
            if new_stamp is not None:
                current = _current(folder.fd)
                had = current.pop(new_stamp, None)
                if state == "enabled":
                    current = dict(list(current.items())[-(_CURRENT_KEPT - 1) :])
                    current[new_stamp] = uuid.uuid4().hex
                if state == "enabled" or had is not None or damaged:
                    # suspended: the new file is the "null" version, even when it was this
                    # key's live file once (moved away and back), named then
                    _write_text(root, folder.fd, "current", json.dumps(current))
            yield
        except BaseException:
            # the rename or unlink did not happen (or the records of it failed first, a
            # full disk): the live file stays, and no link to it may count as a version
            if kept is not None:
                folder.remove(kept)
            raise
        if state == "suspended":  # the new write (or delete) is the "null" version now
            for entry in _kept(folder.fd):
                if entry.version_id == "null" and entry != kept:
                    folder.remove(entry)
        if new_stamp is None or state != "enabled":  # else "current" names the new file
            folder.prune()
    finally:
        if live is not None:
            live.close()
        folder.close()


def list_versions(root: Root, key: str) -> list[ObjectVersion]:
    folder = _Key(root, key)
    live = folder.live()
    try:
        versions = []
        for entry in reversed(folder.kept(None if live is None else live.st)):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(entry.name, dir_fd=folder.fd, follow_symlinks=False)
                when = datetime.fromtimestamp(st.st_mtime, UTC)
                versions.append(ObjectVersion(entry.version_id, st.st_size, when, False))
        if live is not None:
            when = datetime.fromtimestamp(live.st.st_mtime, UTC)
            latest = ObjectVersion(folder.live_id(live.st), live.st.st_size, when, True)
            versions.insert(0, latest)
        return versions
    finally:
        if live is not None:
            live.close()
        folder.close()


def open_version(root: Root, key: str, version_id: str) -> tuple[int, os.stat_result, Meta | None]:
    """A descriptor of that version's file (the caller closes it), its stat and meta."""
    if not is_version_id(version_id):
        raise ObjectNotFoundError("no such version")
    folder = _Key(root, key)
    live = folder.live()
    try:
        if live is not None and folder.live_id(live.st) == version_id:
            return os.dup(live.fd), live.st, meta_file.lookup(root, key, live.st)
        for entry in folder.kept(None if live is None else live.st):
            if entry.version_id == version_id:
                return _open_kept(folder.fd, entry)
        raise ObjectNotFoundError("no such version")
    finally:
        if live is not None:
            live.close()
        folder.close()


def _open_kept(dir_fd: int, entry: _Kept) -> tuple[int, os.stat_result, Meta | None]:
    """Open a listed prior version; swapped since for a link, FIFO or folder (or purged),
    it is no version: never followed, waited on or read."""
    try:
        fd = os.open(entry.name, O_READ, dir_fd=dir_fd)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in (*_LINK_ERRNOS, errno.ENXIO):
            raise ObjectNotFoundError("no such version") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFoundError("no such version")
        return fd, st, _meta_of(dir_fd, entry)
    except BaseException:
        os.close(fd)
        raise


def purge(root: Root, key: str, versions: list[ObjectVersion], everything: bool) -> None:
    """Delete these versions of ``key`` (as listed) for good; the live file too when
    named and ``everything`` (``keep=0``). Otherwise the caller kept the latest version
    it listed, so a live file named here was written since, under an id used again
    (``"null"``, suspended meanwhile): a newer write, never purged; and so is a prior
    version of that id that is not the file listed (that write, overwritten since)."""
    doomed = {v.version_id for v in versions}
    listed = {(v.version_id, v.last_modified, v.size) for v in versions}
    with key_locks(root, key):
        folder = _Key(root, key)
        live = folder.live()
        try:
            for entry in folder.kept(None if live is None else live.st):
                if entry.version_id in doomed and (
                    everything or entry.version_id != "null" or _stamp(folder.fd, entry) in listed
                ):
                    folder.remove(entry)
            live_id = None if live is None else folder.live_id(live.st)
            if live is not None and live_id in doomed and everything:
                # the key's own entry (a link is removed itself, never its target)
                dir_fd, name, where = open_parent(root, key, create=False)
                try:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
                meta_file.drop(root, key)
                remove_empty_parents(root, where)
                live_id = None
            if live_id in (None, "null"):
                folder.prune()
        finally:
            if live is not None:
                live.close()
            folder.close()


def _stamp(dir_fd: int, entry: _Kept) -> tuple[str, datetime, int] | None:
    """A prior version as :func:`list_versions` lists it: id, time and size."""
    try:
        st = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return entry.version_id, datetime.fromtimestamp(st.st_mtime, UTC), st.st_size


def _live_file(root: Root, key: str, dir_fd: int) -> set[tuple[int, int, str]]:
    """``{(st_dev, st_ino, version id)}`` of the live file of ``key`` (``dir_fd``: its
    folder of versions), as :meth:`_Key.kept` marks it; empty: none."""
    try:
        found = open_object(root, key)
    except (StorageError, OSError):
        return set()
    found.close()
    live_id = _current(dir_fd).get(meta_file.stamp(found.st), "null")
    return {(found.st.st_dev, found.st.st_ino, live_id)}


def _names(leaf: str, folder: str) -> bool:
    """Whether the record ``name`` of the key's folder ``folder`` is that key's last
    segment: a planted one (``..``, a path) never makes a scan open a file elsewhere."""
    if "/" in leaf or leaf in ("", ".", ".."):
        return False
    return folder == _folder(leaf)[-1]


def scan(root: Root, prefix: str) -> list[tuple[str, int]]:
    """``(<key>\\<version id>, size)`` of every prior version under the folder ``prefix``."""
    out: list[tuple[str, int]] = []
    parts = [VERSIONS_DIR, *(prefix.rstrip("/").split("/") if prefix else [])]
    try:
        fd, _ = open_dir(root, parts, follow=False)
    except (StorageError, OSError):
        return out

    def walk(fd: int, key_prefix: str) -> None:
        with os.scandir(fd) as it:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in sorted(names):
            if not is_dir:
                continue
            with contextlib.suppress(OSError):
                sub = os.open(name, O_DIR, dir_fd=fd)
                try:
                    if not name.startswith("\\"):
                        walk(sub, key_prefix + name + "/")
                        continue
                    leaf = _read_text(sub, "name")
                    if leaf is None or not _names(leaf, name):
                        continue
                    key = key_prefix + leaf
                    # as kept(), so as list_versions: a link to the live file kept as
                    # the live version itself (a writer killed before its rename) or a
                    # second name of one version is not a version, while one file kept
                    # under another id (moved away and back) is one more
                    seen = _live_file(root, key, sub)
                    for entry in _kept(sub):
                        with contextlib.suppress(FileNotFoundError):
                            st = os.stat(entry.name, dir_fd=sub, follow_symlinks=False)
                            mark = (st.st_dev, st.st_ino, entry.version_id)
                            if stat_mod.S_ISREG(st.st_mode) and mark not in seen:
                                seen.add(mark)
                                out.append((f"{key}{VERSION_SEP}{entry.version_id}", st.st_size))
                finally:
                    os.close(sub)

    try:
        walk(fd, prefix)
    finally:
        os.close(fd)
    return out


# ------------------------------------------------------------------ the backend's hooks


class LocalVersions(StorageBackend):
    """The versioning hooks of :class:`~file_storage.LocalStorageBackend`."""

    _dir: Root

    if TYPE_CHECKING:

        def _open_tmp(self, key: str, mode: int = 0o666) -> tuple[tuple[int, str, int], str]: ...

        def _complete(
            self,
            gate: Gate,
            key: str,
            opened: tuple[int, str, int],
            name: str,
            fill: Callable[[int], None] | None,
            meta: Meta | None,
        ) -> str: ...

        @staticmethod
        def _etag(st: os.stat_result) -> str: ...

    def _keeping(self, key: str, new_stamp: str | None) -> contextlib.AbstractContextManager[None]:
        return keeping(self._dir, key, new_stamp)

    async def _versioning(self) -> Versioning:
        return await asyncio.to_thread(read_state, self._dir)

    async def _set_versioning(self, enabled: bool) -> None:
        await asyncio.to_thread(write_state, self._dir, enabled)

    async def _list_versions(self, key: str) -> list[ObjectVersion]:
        return await asyncio.to_thread(list_versions, self._dir, key)

    async def _stat_version(self, key: str, version_id: str) -> ObjectInfo:
        def stat() -> ObjectInfo:
            fd, st, meta = open_version(self._dir, key, version_id)
            os.close(fd)
            from file_storage._mime import guess_content_type

            meta = meta or Meta(guess_content_type(key), {})
            return ObjectInfo(
                key=key,
                size=st.st_size,
                last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
                etag=self._etag(st),
                content_type=meta.content_type,
                metadata=meta.metadata,
                cache_control=meta.cache_control,
                content_disposition=meta.content_disposition,
            )

        return await asyncio.to_thread(stat)

    async def _stream_version(
        self, key: str, version_id: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        fd, _, _ = await in_pool(
            open_version, self._dir, key, version_id, cleanup=lambda r: os.close(r[0])
        )
        try:
            offset = start
            while end is None or offset < end:
                chunks = await in_pool(read_batch, fd, offset, end, chunk_size, 8)
                for chunk in chunks:
                    yield chunk
                if len(chunks) < 8 or len(chunks[-1]) < chunk_size:
                    return
                offset += sum(len(c) for c in chunks)
        finally:
            os.close(fd)

    async def _restore_version(self, key: str, version_id: str) -> str:
        def restore(gate: Gate) -> str:
            from file_storage.backends.local._io import copy_fd

            src, _, meta = open_version(self._dir, key, version_id)
            try:
                opened, name = self._open_tmp(key)
                return self._complete(
                    gate, key, opened, name, lambda fd: (copy_fd(src, fd, gate), None)[1], meta
                )
            finally:
                os.close(src)

        return await gated(restore)

    async def _purge_versions(
        self, key: str, doomed: list[ObjectVersion], everything: bool
    ) -> None:
        await to_the_end(purge, self._dir, key, doomed, everything)

    async def _version_sizes(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        epoch = datetime.fromtimestamp(0, UTC)
        for name, size in await in_pool(scan, self._dir, prefix):
            yield ObjectInfo(name, size, epoch)
