"""The S3 backend's clients: one set per event loop, opened on first use, closed with
their loop (or by ``aclose``, once the operations still running on them have ended).

An aiohttp session (inside an aiobotocore client) belongs to the loop it was opened in,
so a backend used from one ``asyncio.run`` after another, or from several threads each
running a loop, keeps a :class:`LoopClients` per loop. On the obstore transport the
store itself is shared (it is not bound to a loop); aiobotocore opens beside it only for
what obstore cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from typing import Any

from file_storage._loops import ShutdownHook
from file_storage.backends import _forks
from file_storage.backends.s3._config import (
    S3Options,
    addressing,
    instrument,
    open_client,
)
from file_storage.backends.s3._errors import error_code, is_outage, map_s3_error
from file_storage.backends.s3._fallback import Fallback
from file_storage.backends.s3._obstore import ObstoreClient, open_store
from file_storage.backends.s3._versions import S3Versions
from file_storage.errors import (
    StorageConfigError,
    StorageError,
)

__all__ = ["LoopClients", "S3Clients"]

logger = logging.getLogger("file_storage.backends.s3")


class S3Clients(S3Versions):
    """Client management of :class:`S3StorageBackend` (state set by its constructor)."""

    _options: S3Options
    _bucket: str
    _fallback: Fallback
    _loops: dict[asyncio.AbstractEventLoop, LoopClients]
    _loops_lock: threading.Lock
    _closing: set[asyncio.Task[None]]
    _stores: dict[str | None, Any]
    _parents_clients: list[LoopClients]

    def _forked(self) -> None:
        super()._forked()
        # a thread of the parent's, caught registering its loop's clients, held this lock:
        # it has no thread in the child to release it
        self._loops_lock = threading.Lock()
        # the parent's clients share their connections with the parent, and their loops
        # are the parent's (one the child inherited is no loop of its own): set aside,
        # never used nor closed here (a TLS close would end the parent's sessions); kept,
        # since a client freed unclosed warns
        for clients in self._loops.values():
            clients.hook.disown()
        self._parents_clients = [*self._parents_clients, *self._loops.values()]
        self._loops = {}
        self._closing = set()
        self._stores = {}  # the parent's obstore stores (refused after a fork anyway)
        self._fallback.forked()  # the spool's flusher: the child's first use starts its own

    def _start_background(self) -> None:
        """Start what runs beside the clients (the spool's flushes), once per loop."""

    # ---------------------------------------------------------------- clients

    def _here(self) -> LoopClients:
        """The clients of the running event loop (a new, empty set in a new loop)."""
        loop = asyncio.get_running_loop()
        clients = self._loops.get(loop)
        if clients is None:
            with self._loops_lock:
                clients = self._loops.get(loop)
                if clients is None:
                    self._forget_closed_loops()
                    clients = self._loops[loop] = LoopClients()
                    clients.hook = ShutdownHook(functools.partial(self._close_clients, clients))
        return clients

    def _forget_closed_loops(self) -> None:
        for loop, clients in list(self._loops.items()):
            if loop.is_closed():
                # closed without shutdown_asyncgens() (asyncio.run always calls it): its
                # connections cannot be closed any more; drop them, never reuse them
                del self._loops[loop]
                if clients.s3 is not None:
                    logger.warning("dropped the S3 client of an event loop closed under it")

    async def _client(self) -> Any:
        """The backend's S3 client in this event loop, opened on first use."""
        clients = self._here()
        if clients.s3 is None:
            async with clients.lock:
                if clients.s3 is None:
                    clients.s3 = await self._open(clients, self._options.endpoint_url)
        self._start_background()
        return clients.s3

    async def _signing_client(self) -> Any:
        """The client that signs URLs: a second one bound to public_endpoint_url when set."""
        # SigV4 signs the host: a URL re-pointed after signing no longer verifies
        if self._options.public_endpoint_url is None:
            return await self._client()
        clients = self._here()
        if clients.signer is None:
            async with clients.lock:
                if clients.signer is None:
                    endpoint = self._options.public_endpoint_url
                    clients.signer = await self._open(clients, endpoint)
        return clients.signer

    async def _open(self, clients: LoopClients, endpoint: str | None) -> Any:
        if self._options.client == "obstore":
            client = self._obstore_client(clients, endpoint)
        else:
            client = await self._open_boto(clients, endpoint)
        # closed with its loop: asyncio.run finalizes async generators before closing it
        await clients.hook.arm()
        logger.debug("opened S3 client for bucket %r", self._bucket)
        return client

    async def _open_boto(self, clients: LoopClients, endpoint: str | None) -> Any:
        client = await clients.stack.enter_async_context(open_client(self._options, endpoint))
        instrument(client)
        return client

    def _obstore_client(self, clients: LoopClients, endpoint: str | None) -> Any:
        """The obstore transport; calls it cannot serve open an aiobotocore client lazily."""
        _forks.obstore_call()  # in a child forked after the parent called it: refused
        store = self._stores.get(endpoint)
        if store is None:  # not bound to an event loop: one per endpoint for the backend
            virtual = addressing(self._options, endpoint) == "virtual" or (
                endpoint is None and self._options.addressing_style == "auto"
            )
            store = self._stores[endpoint] = open_store(self._options, endpoint, virtual)
        lock = asyncio.Lock()

        async def boto() -> Any:
            if endpoint not in clients.boto:
                async with lock:
                    if endpoint not in clients.boto:
                        clients.boto[endpoint] = await self._open_boto(clients, endpoint)
                        logger.debug("opened aiobotocore beside obstore for %r", self._bucket)
            return clients.boto[endpoint]

        return ObstoreClient(store, self._bucket, boto)

    async def _close_clients(self, clients: LoopClients) -> None:
        with self._loops_lock:
            for loop, current in list(self._loops.items()):
                if current is clients:
                    del self._loops[loop]
        async with clients.lock:
            if clients.background:  # aborts of failed uploads still need the client
                await asyncio.gather(*clients.background, return_exceptions=True)
            await clients.stack.aclose()

    async def _aclose(self) -> None:
        await self._fallback.stop()
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            clients = self._loops.get(loop)
            if clients is not None and self._in_flight.when_idle(
                functools.partial(self._close_later, loop, clients)
            ):
                # operations still run on these clients (a download being served): they
                # finish on them, which close when the last one ends; new ones open anew
                del self._loops[loop]
                clients = None
            self._forget_closed_loops()
        if clients is not None:
            await clients.hook.run()
        closing = [task for task in self._closing if task.get_loop() is loop]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)

    def _close_later(self, loop: asyncio.AbstractEventLoop, clients: LoopClients) -> None:
        # called as the loop's last operation ends; its loop is running, still open
        task = loop.create_task(clients.hook.run())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _check(self) -> None:
        # one HeadBucket: a missing bucket, bad credentials or an unreachable endpoint
        # fail the app's start instead of its first request
        client = await self._client()
        try:
            await client.head_bucket(Bucket=self._bucket)
        except Exception as exc:
            # HEAD answers carry no body: a missing bucket is a bare 404, which
            # map_s3_error would read as a missing object
            if error_code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageConfigError(f"bucket {self._bucket!r} does not exist") from exc
            if self._fallback.spool is not None and is_outage(exc):
                # the spool exists to ride out an outage: starting during one is allowed
                logger.warning(
                    "S3 unavailable at start-up (%s): writes go to the fallback spool",
                    type(exc).__name__,
                )
                return
            raise

    def _map_error(self, exc: Exception, operation: str, key: str | None) -> StorageError | None:
        mapped = map_s3_error(exc, bucket=self._bucket)
        return mapped if mapped is not None else super()._map_error(exc, operation, key)


class LoopClients:
    """The S3 clients of one event loop, closed when it shuts down (or by ``aclose``)."""

    __slots__ = ("background", "boto", "hook", "lock", "s3", "signer", "stack")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.stack = contextlib.AsyncExitStack()
        self.s3: Any = None
        self.signer: Any = None
        self.boto: dict[str | None, Any] = {}  # beside obstore: aiobotocore, per endpoint
        self.background: set[asyncio.Task[None]] = set()
        self.hook: ShutdownHook  # set by the backend: closes these clients once
