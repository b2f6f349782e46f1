"""The per-key locks of the in-process quota ledger (see :mod:`file_storage._quota.ledger`)."""

from __future__ import annotations

import threading
from types import TracebackType

from file_storage._loops import SharedLock

# every read-modify-write of a ledger (used, reserved, sizes) and of a lock table
_LEDGER = threading.RLock()


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = SharedLock()
        self.users = 0  # holders and waiters: the lock is dropped when none are left


class _Held:
    """Holds the locks of some keys, taken in sorted order, for one ``async with``."""

    __slots__ = ("_entries", "_grants", "_locks")

    def __init__(self, locks: dict[str, _KeyLock], keys: list[str]) -> None:
        self._locks = locks
        self._entries: list[tuple[str, _KeyLock]] = []
        self._grants: list[int] = []  # of the locks taken so far
        with _LEDGER:
            for key in keys:
                entry = locks.get(key)
                if entry is None:
                    entry = locks[key] = _KeyLock()
                entry.users += 1
                self._entries.append((key, entry))

    async def __aenter__(self) -> None:
        try:
            for _, entry in self._entries:
                self._grants.append(await entry.lock.acquire())
        except BaseException:
            self._unlock()  # cancelled while waiting: give back what was taken
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._unlock()

    def holds(self, key: str) -> bool:
        """True while the lock of ``key`` is still this holder's: not taken over since (by
        the next acquirer, its holder's loop having been closed under it)."""
        for i, (held, entry) in enumerate(self._entries):
            if held == key:
                return i < len(self._grants) and entry.lock.holds(self._grants[i])
        return False

    def _unlock(self) -> None:
        with _LEDGER:
            for i, (key, entry) in enumerate(self._entries):
                if i < len(self._grants):
                    entry.lock.release(self._grants[i])
                entry.users -= 1
                if not entry.users and self._locks.get(key) is entry:
                    del self._locks[key]
            self._entries = []
            self._grants = []
