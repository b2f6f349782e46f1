"""The local backend's expiry rules: one small JSON file under the root.

It lives at ``<root>/.file_storage\\lifecycle.json``: a backslash is banned from keys, so
no key reaches it and listings never show it. It is replaced whole through the root's
descriptor (a temp file renamed over it), so a reader sees the old rules or the new,
never half a file, and a crash leaves at most a temp file the stale-temp sweep removes.
A change is read, made and written under a lock every process takes (``key_locks``).
"""

from __future__ import annotations

import errno

from file_storage._expiry import RuleStore, apply_rule, decode_rules, encode_rules
from file_storage.backends.local._fs import Root, read_small, write_small
from file_storage.backends.local._io import in_pool
from file_storage.backends.local._meta import key_locks

__all__ = ["LocalRules"]

RULES_NAME = ".file_storage\\lifecycle.json"


class LocalRules(RuleStore):
    """Rules kept in the root, so they survive restarts and are shared by processes."""

    def __init__(self, root: Root) -> None:
        self._root = root  # (synced as it says: Root.durable)

    async def get(self, *, quiet: bool = False) -> dict[str, int]:
        return await in_pool(self._read, quiet)

    async def put(self, prefix: str, days: int | None) -> None:
        await in_pool(self._put, prefix, days)

    def _read(self, quiet: bool = False) -> dict[str, int]:
        try:
            data = read_small(self._root.fd(), RULES_NAME)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EMLINK):  # a link: never followed
                raise
            data = None
        return decode_rules(
            data or b"",  # a FIFO, folder or link in its place: damaged, never waited on
            f"the expiry rules file {RULES_NAME!r} in the storage root is damaged: "
            "fix or remove it, then set the rules again",
            quiet=quiet,
        )

    def _put(self, prefix: str, days: int | None) -> None:
        # read, change, write back whole: under the lock of the file's name (a thread
        # lock, then an flock every process takes), or two processes setting rules at
        # once would each write back what it read, and one rule would be lost
        with key_locks(self._root, RULES_NAME):
            rules = self._read()
            if apply_rule(rules, prefix, days):
                self._write(rules)

    def _write(self, rules: dict[str, int]) -> None:
        write_small(self._root, self._root.fd(), RULES_NAME, encode_rules(rules).encode())
