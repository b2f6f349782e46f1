"""The S3 backend's expiry rules: merged into the bucket's lifecycle configuration.

A bucket has one lifecycle configuration, read and replaced whole
(GetBucketLifecycleConfiguration, PutBucketLifecycleConfiguration). This library's rules
are those whose ID starts with :data:`RULE_ID`; each expires the objects under one full
S3 prefix (``<backend prefix>/<folder>``). Setting a rule reads the configuration, drops
our rule for that prefix, adds the new one and writes the whole back: rules that others
made (a console rule, another tool's, one that aborts stale multipart uploads) go back
exactly as they were read. S3 has no conditional write of this configuration, so two
processes doing this at the same moment can lose one change (documented).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from file_storage._expiry import RuleStore
from file_storage.backends.s3._errors import error_code
from file_storage.errors import StorageError

__all__ = ["RULE_ID", "S3Rules"]

RULE_ID = "file_storage:"
MAX_RULE_ID = 255  # characters in a lifecycle rule ID (AWS, "Lifecycle configuration elements")
MAX_RULES = 1000  # rules in one lifecycle configuration (AWS quota)
# settings of the whole configuration that GET returns and PUT takes beside the rules
_KEPT_SETTINGS = ("TransitionDefaultMinimumObjectSize",)


def rule_id(full_prefix: str) -> str:
    """A readable ID naming the prefix; a digest when the prefix is too long for one."""
    readable = RULE_ID + full_prefix
    if len(readable) <= MAX_RULE_ID:
        return readable
    return RULE_ID + "sha256:" + hashlib.sha256(full_prefix.encode()).hexdigest()


def _ours(rule: Any) -> str | None:
    """The full prefix of one of our rules, else ``None``."""
    if not isinstance(rule, dict) or not str(rule.get("ID", "")).startswith(RULE_ID):
        return None
    where = rule.get("Filter")
    prefix = where.get("Prefix") if isinstance(where, dict) else None
    return prefix if isinstance(prefix, str) else None


def _days(rule: dict[str, Any]) -> int | None:
    expiration = rule.get("Expiration")
    days = expiration.get("Days") if isinstance(expiration, dict) else None
    if rule.get("Status") != "Enabled" or not isinstance(days, int) or days < 1:
        return None
    return days


class S3Rules(RuleStore):
    """The lifecycle rules of one bucket that expire objects under one backend's root."""

    applies_itself = True

    def __init__(self, client: Callable[[], Awaitable[Any]], bucket: str, root: str) -> None:
        self._client = client
        self._bucket = bucket
        self._root = root

    async def _read(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The rules, and the other settings of the configuration to write back with them."""
        client = await self._client()
        try:
            answer = await client.get_bucket_lifecycle_configuration(Bucket=self._bucket)
        except Exception as exc:
            if error_code(exc) == "NoSuchLifecycleConfiguration":
                return [], {}
            raise
        rules = answer.get("Rules")
        # a PUT without it would reset the bucket's choice to S3's default
        kept = {name: answer[name] for name in _KEPT_SETTINGS if answer.get(name)}
        return (list(rules) if isinstance(rules, list) else []), kept

    async def get(self, *, quiet: bool = False) -> dict[str, int]:
        found: dict[str, int] = {}
        rules, _ = await self._read()
        for rule in rules:
            full = _ours(rule)
            if full is None or not full.startswith(self._root):
                continue  # another backend's (a different prefix in the same bucket)
            days = _days(rule)
            if days is not None:
                found[full[len(self._root) :]] = days
        return found

    async def put(self, prefix: str, days: int | None) -> None:
        full = self._root + prefix
        rules, settings = await self._read()
        kept = [rule for rule in rules if _ours(rule) != full]
        if days is not None:
            kept.append(
                {
                    "ID": rule_id(full),
                    "Filter": {"Prefix": full},
                    "Status": "Enabled",
                    "Expiration": {"Days": days},
                }
            )
        elif len(kept) == len(rules):
            return  # no rule of ours there: nothing to write
        client = await self._client()
        if not kept:
            # a configuration needs at least one rule: ours was the last, so remove it all
            await client.delete_bucket_lifecycle(Bucket=self._bucket)
            return
        if len(kept) > MAX_RULES:
            raise StorageError(f"a bucket holds at most {MAX_RULES} lifecycle rules")
        await client.put_bucket_lifecycle_configuration(
            Bucket=self._bucket, LifecycleConfiguration={"Rules": kept}, **settings
        )
