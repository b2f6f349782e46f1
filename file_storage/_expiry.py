"""Lifecycle expiry: where a backend keeps its rules, and the background purge.

A rule is a folder prefix (``""`` or ``a/b/``) and a number of days. A :class:`RuleStore`
keeps the rules of one backend: in memory (:class:`MemoryRules`), in a file under the
local root (``local._rules``), or in the bucket's lifecycle configuration on S3
(``s3._lifecycle``), where S3 applies them itself (``applies_itself``). The others are
applied by ``purge_expired``, which :class:`Expiry` runs every ``interval`` seconds while
the backend is in use, in each event loop that uses it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from file_storage._json import parse_json
from file_storage._keys import validate_prefix
from file_storage._loops import LoopLock, Periodic
from file_storage.errors import InvalidKeyError, StorageConfigError, StorageError
from file_storage.models import ObjectInfo

__all__ = [
    "Expiry",
    "MemoryRules",
    "RuleStore",
    "apply_rule",
    "check_days",
    "cutoff",
    "decode_rules",
    "encode_rules",
    "expired_by",
    "same_version",
]

logger = logging.getLogger("file_storage")


def check_days(days: object) -> int | None:
    """``days`` as set_expiration takes it: a positive int, or ``None`` (no rule)."""
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError("days must be a positive int (or None to remove the rule)")
    return days


def cutoff(moment: datetime, days: int) -> datetime | None:
    """What was last written before this has expired at ``moment`` under a rule of
    ``days``; ``None``: nothing has (a rule of a million days: before year 1)."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        return None


def expired_by(rules: dict[str, int], key: str, written: datetime, moment: datetime) -> bool:
    """Whether ``rules`` expire at ``moment`` the object ``key`` last written at ``written``
    (nested rules: expired under any of them, so the shorter wins)."""
    for folder, days in rules.items():
        if key.startswith(folder):
            limit = cutoff(moment, days)
            if limit is not None and written < limit:
                return True
    return False


def same_version(current: ObjectInfo, listed: ObjectInfo) -> bool:
    """Whether ``current`` is the object ``listed`` was: by ETag where both carry one, and
    no later second of the last write (an ETag may be the content's MD5, as on GCS, which
    a rewrite of the same bytes keeps; a stat may answer whole seconds where the listing
    gave fractions), else by size and time of the last write."""
    if current.etag is not None and listed.etag is not None:
        return (
            (current.etag, current.size) == (listed.etag, listed.size)
            # a rewrite is later; a store's stat answering an older time is no rewrite
            and _second(current.last_modified) <= _second(listed.last_modified)
        )
    return (current.size, current.last_modified) == (listed.size, listed.last_modified)


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def decode_rules(data: bytes, damaged: str, *, quiet: bool = False) -> dict[str, int]:
    """The rules of a stored rules document; ``damaged``: what to say when it is not one;
    ``quiet``: the rules it skips are not logged (read again, and logged once already)."""
    try:
        raw = parse_json(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one; nested too deeply too
        raw = None
    rules = raw.get("expiration") if isinstance(raw, dict) else None
    if not isinstance(rules, dict):
        raise StorageError(damaged)
    return {
        prefix: days
        for prefix, days in rules.items()
        if _days(prefix, days, quiet) and _folder(prefix, quiet)
    }


def _days(prefix: str, days: object, quiet: bool) -> bool:
    """Whether ``days`` is a rule's days as set_expiration writes them; else the rule is
    skipped (it expires nothing), and said so."""
    if isinstance(days, int) and not isinstance(days, bool) and days > 0:
        return True
    if not quiet:
        logger.warning(
            "expiry rule of %r ignored: its days are no positive whole number (fix the rules)",
            prefix[:80],
        )
    return False


def _folder(prefix: str, quiet: bool) -> bool:
    """Whether ``prefix`` is a folder as set_expiration writes it. Anyone who can write the
    document can plant a rule: ``../`` would purge beside the local root, ``temp`` every
    key starting with that text; such a rule is skipped, never applied."""
    try:
        if validate_prefix(prefix) == prefix:
            return True
    except InvalidKeyError:
        pass
    if not quiet:
        logger.warning(
            "expiry rule of %r ignored: not a folder prefix (fix the rules)", prefix[:80]
        )
    return False


def encode_rules(rules: dict[str, int]) -> str:
    """The document :func:`decode_rules` reads (local file, GCS and Azure object)."""
    return json.dumps({"expiration": dict(sorted(rules.items()))})


def apply_rule(rules: dict[str, int], prefix: str, days: int | None) -> bool:
    """Set (``None``: remove) the rule of ``prefix`` in ``rules``; False: nothing changed
    (the rule to remove was not there)."""
    if days is None:
        if prefix not in rules:
            return False
        del rules[prefix]
    else:
        rules[prefix] = days
    return True


class RuleStore:
    """The expiry rules of one backend (prefix -> days); this one keeps them in memory."""

    #: the store deletes expired objects by itself (S3 lifecycle): purge_expired does nothing
    applies_itself = False

    async def get(self, *, quiet: bool = False) -> dict[str, int]:
        """The rules; ``quiet``: skipped rules are not logged (a purge's read again)."""
        raise NotImplementedError

    async def put(self, prefix: str, days: int | None) -> None:
        """Set (``None``: remove) the rule of ``prefix``; the caller serializes calls."""
        raise NotImplementedError


class MemoryRules(RuleStore):
    """Rules that live as long as the backend object (the memory backend's)."""

    def __init__(self) -> None:
        self._rules: dict[str, int] = {}

    async def get(self, *, quiet: bool = False) -> dict[str, int]:
        return dict(self._rules)

    async def put(self, prefix: str, days: int | None) -> None:
        if days is None:
            self._rules.pop(prefix, None)
        else:
            self._rules[prefix] = days


class Expiry:
    """The rules' lock, and ``purge`` run every ``interval`` seconds (``None``: never)."""

    def __init__(self, interval: float | None) -> None:
        if interval is not None and (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not 0 < interval < math.inf
        ):
            raise StorageConfigError(
                "expire_interval_seconds (STORAGE_EXPIRE_INTERVAL_SECONDS) must be a number "
                "of seconds > 0"
            )
        self.interval = interval
        # set_expiration reads, changes and writes the whole rule set: one at a time
        self.lock = LoopLock()
        self._purger = Periodic("background purge of expired objects failed", logger)

    def start(self, purge: Callable[[], Awaitable[int]]) -> None:
        """Run ``purge`` in the background of the running loop, unless it already runs there."""
        if self.interval is not None:
            self._purger.start(self.interval, purge)

    def forked(self) -> None:
        """In a forked child: the parent's purge task is not this process's."""
        self._purger.forked()

    async def stop(self) -> None:
        await self._purger.stop()
