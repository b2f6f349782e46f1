"""What a move looked at, handed to its copy: the copy takes only that version.

A move looks at its source, copies it, then deletes it only while it is still what the
move looked at. Where a backend can make the copy conditional too (memory, S3; GCS and
Azure with a key of their own), a write landing on the source after that look fails
the copy: the move raises :class:`~file_storage.PreconditionFailedError` with nothing at
the destination, instead of copying the new bytes and then refusing to delete them. The
move hands what it looked at to its ``_copy`` through a task-local ContextVar, so the
hook keeps its signature (and wrappers around it, like the conformance suite's, still
work).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["looked_at", "moving"]

#: the source the move running in this task copies, and what the move found there
_moving: ContextVar[tuple[str, object] | None] = ContextVar("file_storage_moving", default=None)


@contextlib.contextmanager
def moving(src: str, found: object) -> Iterator[None]:
    """Within this block, a copy of ``src`` in this task is the move's: pinned to ``found``."""
    token = _moving.set((src, found))
    try:
        yield
    finally:
        _moving.reset(token)


def looked_at(src: str) -> object | None:
    """What the move copying ``src`` in this task found there (``None``: not a move's copy)."""
    current = _moving.get()
    return current[1] if current is not None and current[0] == src else None
