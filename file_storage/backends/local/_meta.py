"""The local backend's sidecar: content type and metadata, tied to the file version.

A sidecar lives at ``<root>/.file_storage\\meta/<h[:2]>/<h>`` (``h`` the sha256 of the key;
a backslash is banned from keys, so no key can reach it) and maps *versions* of the key's
file to what they were written with. A version is the file's ``(st_ino, st_mtime_ns,
st_size)``: a rename keeps all three, so a write stamps its temp file, records the stamp
in the sidecar, and only then renames the file into place. A reader ``fstat``s the file
it opened and takes the entry with that stamp; no entry means the defaults (or, when the
file was replaced meanwhile, it reads again). Content type and metadata therefore always
come from the write whose bytes the reader has.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import NamedTuple

from file_storage._json import parse_json
from file_storage._metadata import MAX_METADATA_NAMES
from file_storage.backends import _forks
from file_storage.backends.local._fs import (
    _LINK_ERRNOS,
    Root,
    open_dir,
    open_object,
    read_small,
    write_small,
)
from file_storage.errors import ObjectNotFoundError, StorageError

logger = logging.getLogger("file_storage")

META_DIR = ".file_storage\\meta"
KEEP = 4  # versions kept per key: the current one and those a reader may still hold open
# KEEP records of at most 2 KiB of metadata and three 2 KiB headers, JSON-escaped (up to 6
# bytes a character): about 200 KiB. A larger sidecar is none the backend wrote, and is not
# parsed (14 MB of JSON took 150 MB and seconds per stat)
SIDECAR_MAX = 1024 * 1024


class Meta(NamedTuple):
    """What a version was written with beyond its bytes."""

    content_type: str
    metadata: dict[str, str]
    cache_control: str | None = None
    content_disposition: str | None = None


# Writes of one key stamp, record and rename (or unlink and drop) one at a time, so the
# last version renamed is also the last recorded, and an if_match check still holds at
# the rename. Striped by the key's sidecar shard (a lock per key would grow forever):
# threads of this process take the shard's lock, then every process an flock on the
# shard's folder, through one descriptor per root and shard kept open (the thread lock
# makes sharing it safe: flock belongs to the open file, not to the thread).
_STRIPES = [threading.Lock() for _ in range(256)]


def _after_fork_in_child() -> None:
    """A child has none of its parent's threads: a stripe one of them held at the fork
    (a write between its stamp and its rename) would stay held in the child for ever.
    The parent's flock stays: the child's write of that key waits for the parent's."""
    for stripe in _STRIPES:
        stripe._at_fork_reinit()  # type: ignore[attr-defined]


_forks.renew(_after_fork_in_child)
_unlocked: list[bool] = []  # flock refused once here (some network file systems): not again


@contextlib.contextmanager
def key_locks(root: Root, *keys: str) -> Iterator[None]:
    shards = sorted({_where(k)[0][1] for k in keys})
    with contextlib.ExitStack() as stack:
        for shard in shards:  # sorted: no two takers wait on each other
            stack.enter_context(_STRIPES[int(shard, 16)])
            fd = root.kept_dir([META_DIR, shard])
            if _flock(fd):
                stack.callback(_unflock, fd)
        yield


def _unflock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _flock(fd: int) -> bool:
    if _unlocked:
        return False
    try:
        import fcntl
    except ImportError:  # not POSIX: this process's locks only
        _unlocked.append(True)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError as exc:  # NFS without lock emulation, some FUSE file systems
        _unlocked.append(True)
        logger.warning(
            "the storage folder's file system refuses flock (%s): writes of one key by "
            "several processes are not ordered (metadata and if_match, see docs/usage.md)",
            exc.strerror,
        )
        return False


def stamp(st: os.stat_result) -> str:
    return stamp_of(st.st_ino, st.st_mtime_ns, st.st_size)


def stamp_of(ino: int, mtime_ns: int, size: int) -> str:
    """The stamp a file of that inode, mtime and size has (one about to be touched)."""
    return f"{ino:x}-{mtime_ns:x}-{size:x}"


def _where(key: str) -> tuple[list[str], str]:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return [META_DIR, digest[:2]], digest


def _read(root: Root, key: str) -> dict[str, object]:
    parts, name = _where(key)
    try:
        fd, _ = open_dir(root, parts, follow=False)
    except ObjectNotFoundError:
        return {}
    try:
        data = read_small(fd, name, SIDECAR_MAX)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno not in _LINK_ERRNOS:
            # no descriptor left, an I/O error: never "no record", which a write would
            # then record over (and a kept version keep) without the metadata it had
            raise
        return {}
    finally:
        os.close(fd)
    try:
        raw = parse_json(data or b"")
    except ValueError:  # UnicodeDecodeError and nesting too deep among them
        return {}
    return raw if isinstance(raw, dict) else {}


def _entry(raw: object) -> Meta | None:
    if not isinstance(raw, dict) or "content_type" not in raw:
        return None
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_NAMES:
        return None  # no write makes more names: not a record of ours
    headers = [raw.get(name) for name in ("cache_control", "content_disposition")]
    return Meta(
        str(raw["content_type"]),
        {str(k): str(v) for k, v in metadata.items()},
        *(value if isinstance(value, str) else None for value in headers),
    )


def parse(raw: object) -> Meta | None:
    """A :class:`Meta` from its JSON form (``Meta._asdict()``); ``None`` when malformed."""
    return _entry(raw)


def lookup(root: Root, key: str, st: os.stat_result) -> Meta | None:
    """What the version ``st`` of ``key`` was written with; ``None``: no record of it."""
    raw = _read(root, key)
    versions = raw.get("versions")
    if isinstance(versions, dict):
        return _entry(versions.get(stamp(st)))
    return _entry(raw)  # a sidecar written before versions were recorded


def versions_of(root: Root, key: str) -> dict[str, object]:
    """The records of ``key`` by stamp, to change and write back (its key lock held).

    A sidecar written before versions were recorded holds one entry for whichever file the
    key has: it is the record of the file there now, under that file's stamp, so that a
    change that is then taken back (a move or a conditional write that fails) never
    takes the metadata of the object that stays with it.
    """
    raw = _read(root, key)
    versions = raw.get("versions")
    if isinstance(versions, dict):
        return versions
    if _entry(raw) is None:
        return {}
    try:
        found = open_object(root, key)
    except ObjectNotFoundError:
        return {}  # no file left for it to describe
    try:
        now = stamp(found.st)
    finally:
        found.close()
    return {now: {name: raw[name] for name in Meta._fields if name in raw}}


def record(root: Root, key: str, version: str, meta: Meta | None) -> None:
    """Record ``meta`` for ``version`` of ``key`` (call before the rename that installs it).

    ``None`` records nothing: the defaults need no sidecar.
    """
    if meta is None:
        return
    versions = versions_of(root, key)
    versions.pop(version, None)
    kept = dict(list(versions.items())[-(KEEP - 1) :])
    entry: dict[str, object] = {"content_type": meta.content_type, "metadata": meta.metadata}
    for name in ("cache_control", "content_disposition"):
        if (value := getattr(meta, name)) is not None:
            entry[name] = value
    kept[version] = entry
    _write(root, key, {"key": key, "versions": kept})


def forget(root: Root, key: str, version: str) -> None:
    """Take back the record of ``version`` (a conditional write that did not land)."""
    versions = versions_of(root, key)
    if versions.pop(version, None) is not None:
        _write(root, key, {"key": key, "versions": versions})


def copy_versions(root: Root, src: str, dst: str) -> bool:
    """Give ``dst`` the records of ``src`` (a move keeps the file, so its stamp); False: none."""
    versions = versions_of(root, src)
    if not versions:
        return False
    merged = versions_of(root, dst)
    merged.update(versions)
    _write(root, dst, {"key": dst, "versions": dict(list(merged.items())[-KEEP:])})
    return True


def _write(root: Root, key: str, body: dict[str, object]) -> None:
    parts, name = _where(key)
    fd, _ = open_dir(root, parts, create=True, follow=False)
    try:
        write_small(root, fd, name, json.dumps(body).encode())
    finally:
        os.close(fd)


def drop(root: Root, key: str) -> None:
    """Forget every version of ``key`` (call after the rename or unlink that replaced it).

    Tidying only: the call it ends has landed, and records name file versions, so one
    left behind (the disk refused the unlink, something else is there) is never read
    for another file. A failure is logged, never raised to a caller whose write is done.
    """
    parts, name = _where(key)
    try:
        fd, _ = open_dir(root, parts, follow=False)
    except (StorageError, OSError):  # ObjectNotFoundError among them
        return
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove the metadata file of a key: %s", exc.strerror)
    finally:
        os.close(fd)
