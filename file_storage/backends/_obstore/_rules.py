"""The expiry rules of the GCS and Azure backends: one small JSON object in the store.

It lives under the backend's prefix at :data:`RULES_NAME`, a name no key can take (its
one segment is longer than the 255 UTF-8 bytes a key segment may have), so listings,
quota scans and ``delete_prefix`` never see it, and every process using the same bucket
or container and prefix shares the rules, across restarts. It is replaced whole by a
conditional write (create-only when absent, else only over the version read), retried
when another process wrote in between, so concurrent changes lose no rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from file_storage._expiry import RuleStore, apply_rule, decode_rules, encode_rules
from file_storage.backends._obstore._errors import is_refused_condition
from file_storage.errors import StorageUnavailableError

if TYPE_CHECKING:
    from file_storage.backends._obstore._backend import ObstoreBackend

__all__ = ["RULES_NAME", "ObstoreRules"]

RULES_NAME = ".file_storage-expiry-rules".ljust(256, "_") + ".json"
# writers of other processes in between: give up after this many fresh reads
MAX_ATTEMPTS = 16


class ObstoreRules(RuleStore):
    """Rules kept in the store beside the objects, shared by every process using it."""

    def __init__(self, backend: ObstoreBackend) -> None:
        self._backend = backend

    async def _read(self, quiet: bool = False) -> tuple[dict[str, int], Any]:
        """The rules and the put mode that replaces exactly what was read."""
        obs, store = self._backend._store()
        try:
            result = await obs.get_async(store, RULES_NAME)
        except FileNotFoundError:  # obstore's NotFoundError is one
            return {}, "create"
        rules = decode_rules(
            bytes(await result.bytes_async()),
            f"the expiry rules object {RULES_NAME[:26]}... under the prefix is damaged: "
            "delete it, then set the rules again",
            quiet=quiet,
        )
        meta = result.meta
        mode: dict[str, str] = {"e_tag": meta.get("e_tag") or ""}
        if meta.get("version") is not None:
            mode["version"] = meta["version"]
        return rules, mode

    async def get(self, *, quiet: bool = False) -> dict[str, int]:
        return (await self._read(quiet))[0]

    async def put(self, prefix: str, days: int | None) -> None:
        obs, store = self._backend._store()
        for _ in range(MAX_ATTEMPTS):
            rules, mode = await self._read()
            if not apply_rule(rules, prefix, days):
                return
            body = encode_rules(rules).encode()
            try:
                await obs.put_async(
                    store,
                    RULES_NAME,
                    body,
                    mode=mode,
                    attributes={"Content-Type": "application/json"},
                    use_multipart=False,
                )
            except Exception as exc:
                if not is_refused_condition(exc):
                    raise
                continue  # another process changed the rules since the read: read again
            return
        raise StorageUnavailableError(
            f"the expiry rules changed under us {MAX_ATTEMPTS} times in a row: try again"
        )
