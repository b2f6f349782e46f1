"""One at-fork hook for every backend: a child forked after its parent used one.

Task workers fork after the parent used the backend (Celery's prefork pool, gunicorn
``--preload``, ``multiprocessing`` with ``fork``). The child starts from a copy of the
parent's memory without its threads: a lock one of them held stays held for ever, and
clients the parent opened belong to the parent (their connections, their event loops).
In the child, first each module's state registered with :func:`renew` is made anew:

- the local backend's I/O threads (``local._io``: a copied pool counts the parent's idle
  threads as its own, and none of them runs here), its temp-name token (``local._io``: the
  parent's temp files are another process's), its key locks' thread locks
  (``local._meta``) and each root's lock (``local._fs``), any of which a parent's thread
  may have held at the fork;
- the S3 spool's per-key turns (``_spool``): one the parent's save held at the fork would
  wait in the child for ever; and its descriptors of ``keys.lock`` (``_spool_keys``: the
  child holds none of the parent's record locks) with their guard;

then every backend, registered with :func:`track` as it is built, runs its ``_forked()``:
its ``set_versioning`` lock and the background tasks of its loops (expiry purge, S3 spool
flusher: the parent's, started again by the child's first use), and what the backend adds
(S3: its clients and their lock).

obstore's Rust (tokio) runtime does not survive a fork: a child forked after its parent
made an obstore call hangs on its own first one, even through a store made anew.
:func:`obstore_call` refuses it with :class:`StorageConfigError` instead.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from file_storage.errors import StorageConfigError

if TYPE_CHECKING:
    from file_storage.backends._core import BackendCore

__all__ = ["OBSTORE_FORKED", "obstore_call", "renew", "track"]

OBSTORE_FORKED = (
    "obstore cannot be used in a process forked after its parent used it (its runtime "
    "does not survive a fork): make the first obstore call in the workers, after the "
    "fork (not in the parent), or start them with the spawn start method"
)

_live: weakref.WeakSet[BackendCore] = weakref.WeakSet()
_renewals: list[Callable[[], object]] = []
# [this process made an obstore call, this process was forked after its parent made one]
_obstore = [False, False]


def renew(fresh: Callable[[], object]) -> None:
    """Call ``fresh()`` in every child forked from now on, before the backends' ``_forked()``:
    it makes anew module state that is this process's own (held by its threads, or naming
    it)."""
    _renewals.append(fresh)


def track(backend: BackendCore) -> None:
    """Call ``backend._forked()`` in every child forked from now on, while it lives."""
    _live.add(backend)


def obstore_call() -> None:
    """Before a call into obstore: refused in a child forked after its parent made one.

    Raises:
        StorageConfigError: this process was forked after its parent called obstore.
    """
    if _obstore[1]:
        raise StorageConfigError(OBSTORE_FORKED)
    _obstore[0] = True


def _after_fork_in_child() -> None:
    _obstore[1] = _obstore[0]
    for fresh in _renewals:
        fresh()
    for backend in list(_live):
        backend._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
