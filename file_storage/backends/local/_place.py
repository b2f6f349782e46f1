"""Where a local root folder is, to tell whether two roots share files (migrate).

A path names a folder of one mounted file system; the same folder can be reached by
other paths: a symlink, ``..``, a bind mount of it or of a folder above it (Linux's
mount table, ``/proc/self/mountinfo``, says which folder of its file system each mount
shows), or after the folder was renamed while a backend held it open.
"""

from __future__ import annotations

import os
import re

__all__ = ["fs_place", "open_folder"]

_MOUNTINFO = "/proc/self/mountinfo"
_ESCAPED = re.compile(rb"\\([0-7]{3})")  # mountinfo writes " ", "\t", "\n", "\\" octal


def _unescape(field: bytes) -> bytes:
    return _ESCAPED.sub(lambda match: bytes([int(match.group(1), 8)]), field)


def _inside(path: bytes, folder: bytes) -> bytes | None:
    """``path`` below ``folder`` (``b""``: the folder itself), or ``None``: not inside."""
    if path == folder:
        return b""
    base = folder.rstrip(b"/") + b"/"
    return path[len(base) :] if path.startswith(base) else None


def fs_place(path: str) -> str | None:
    """``<device>:<path within its file system>`` of the absolute, resolved ``path``:
    the same for every mount that shows the folder. ``None`` without a mount table."""
    try:
        with open(_MOUNTINFO, "rb") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    wanted = os.fsencode(path)
    found: tuple[bytes, bytes, bytes] | None = None  # device, root, path below the mount
    depth = -1
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        below = _inside(wanted, _unescape(fields[4]))
        # the deepest mount point holding the path; of two at one point, the later
        # (mounted over the other) is the one seen
        if below is not None and len(wanted) - len(below) >= depth:
            depth = len(wanted) - len(below)
            found = fields[2], _unescape(fields[3]), below
    if found is None:
        return None
    device, root, below = found
    inner = root.rstrip(b"/") + (b"/" + below if below else b"")
    return f"{os.fsdecode(device)}:{os.fsdecode(inner or b'/')}"


def open_folder(fd: int) -> str | None:
    """The path a folder held open by ``fd`` has now (renamed since: its new one), or
    ``None`` where the system does not tell (or the folder was deleted)."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return link if link.startswith("/") and not link.endswith(" (deleted)") else None
