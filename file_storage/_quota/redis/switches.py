"""The store's versioning in the Redis ledger: ``set_versioning`` and each listing's probe.

``set_versioning`` marks its switch in Redis before it switches the store and ends it
after (``SWITCH``: ``{ns}:vsw`` and ``{ns}:vchg``, see
:mod:`file_storage._quota.redis.scripts`), with the state the store was given, or, when
that call failed (it may have switched all the same: a timeout after it did), the state
the store answers then (``None``: it did not answer either). A listing's probe is kept
only if no switch began or ended since it began (``PROBED``): a probe that read the
store before another process's switch would undo it.
"""

from __future__ import annotations

import contextlib

from file_storage._quota.ledger import Probe, QuotaManager
from file_storage._quota.redis import scripts as lua
from file_storage._quota.redis.lease import new_id
from file_storage._quota.redis.wire import Client, RedisUnavailable


class Switches(QuotaManager):
    """The versioning steps of :class:`~file_storage._quota.redis.ledger.RedisQuotaManager`."""

    ns: str
    lease_ms: int
    _client: Client
    _unpushed_versioning: str | None  # set_versioning while Redis was away
    # the token of this process's set_versioning under way, then of its end to send
    _switching: str | None
    _switch_ends: str | None

    async def _quota_prefixes(self) -> list[str]:
        raise NotImplementedError

    async def versioning_begins(self) -> None:
        # every process's writes and deletes from now until the switch ends (or its lease
        # runs out: a switcher that died) count the key's versions as the store lists them
        self._switching = new_id()
        with contextlib.suppress(RedisUnavailable):  # its end is counted all the same
            await self._client.run(lua.SWITCH, [self.ns, self._switching, self.lease_ms, ""])

    async def set_versioning(self, state: str | None) -> None:
        self._switch_ends, self._switching = self._switching, None
        if state is None:
            # set_versioning failed and the store could not say its state: the switch
            # ends without one, and every quota is listed again on next use (each
            # listing asks the store)
            with contextlib.suppress(RedisUnavailable):  # else its lease runs out
                await self._client.run(lua.SWITCH, [self.ns, self._switch_ends, self.lease_ms, "-"])
                self._switch_ends = None
                await self._client.run(lua.INVALIDATE, [self.ns, "", *await self._quota_prefixes()])
            return
        self.versioning = self._unpushed_versioning = state
        with contextlib.suppress(RedisUnavailable):  # else sent with the next ledger step
            await self._push_versioning()

    async def _push_versioning(self) -> None:
        """Tell every process whether the store keeps prior versions (the scripts ask)."""
        state = self._unpushed_versioning
        if self._switch_ends is None:
            await self._client.call("SET", self.ns + ":ver", state)
        else:
            await self._client.run(lua.SWITCH, [self.ns, self._switch_ends, self.lease_ms, state])
            self._switch_ends = None
        self._unpushed_versioning = None

    async def _probed(self, probe: Probe) -> None:
        """A listing asks the store its versioning, as the in-process ledger does; what it
        read is kept unless a switch began or ended meanwhile (then Redis knows better)."""
        since = await self._client.call("GET", self.ns + ":vchg")
        state = await probe()
        self.versioning = str(await self._client.run(lua.PROBED, [self.ns, state, since or "0"]))
