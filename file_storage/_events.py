"""Object events: the subscribers of one backend, and S3 bucket notifications parsed.

:class:`EventHub` delivers an :class:`ObjectEvent` to every subscriber after a write
succeeded. A plain function is called right there, before the write returns; an
``async`` one is scheduled as a task, so the write never waits for it. The tasks of one
subscriber run one after another, in the order of the events, so a ``"created"`` is
never seen after the ``"deleted"`` that followed it. A callback's exception is logged
and goes no further: it never breaks the write nor the delivery to others.

:func:`parse_s3_event` reads the notification JSON S3 sends to SQS, SNS or Lambda into
the same events, so a worker written against ``subscribe`` in development handles a
queue in production unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from file_storage._json import parse_json
from file_storage._keys import validate_key, validate_prefix
from file_storage.errors import InvalidKeyError
from file_storage.models import ObjectEvent

__all__ = ["Callback", "EventHub", "landing", "note_landed", "parse_s3_event"]

logger = logging.getLogger("file_storage.events")

Callback = Callable[[ObjectEvent], Awaitable[None] | None]
DRAIN_SECONDS = 10.0  # aclose waits this long for async callbacks still running


_LANDED: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "file_storage_landed", default=None
)


@contextlib.contextmanager
def landing() -> Iterator[dict[str, str | None]]:
    """Collect, key by key, the ETag of each object the block's writes stored (``None``:
    the backend's hook did not say; a key missing: no write of it landed). The write's
    own ETag, where a stat after it could see another writer's object."""
    landed: dict[str, str | None] = {}
    token = _LANDED.set(landed)
    try:
        yield landed
    finally:
        _LANDED.reset(token)


def note_landed(key: str, etag: str | None) -> None:
    """Tell an enclosing :func:`landing` block that a write stored ``key``."""
    landed = _LANDED.get()
    if landed is not None:
        landed[key] = etag


class _Subscriber:
    __slots__ = ("active", "callback", "tail")

    def __init__(self, callback: Callback) -> None:
        self.callback = callback
        self.active = True  # False once unsubscribed: nothing more is delivered
        self.tail: asyncio.Task[None] | None = None  # the last delivery scheduled


class EventHub:
    """The subscribers of one backend (false when there are none: nothing to compute)."""

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        # the async deliveries still running, of every loop: one backend may serve
        # threads that each run a loop, and one thread's aclose reads this set while
        # another's deliveries join and leave it
        self._pending: set[asyncio.Task[None]] = set()
        self._pending_lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        if not callable(callback):
            raise TypeError("callback must be callable: callback(event)")
        subscriber = _Subscriber(callback)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            # idempotent; async deliveries already scheduled still run, but none starts
            # after this, not even of an event other subscribers are being given
            subscriber.active = False
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    @contextlib.contextmanager
    def pending(self) -> Iterator[list[ObjectEvent]]:
        """A list for the events of changes done in the block, delivered when it ends
        however it ends: a caller cancelled as the keys are unlocked after its change (a
        Redis round trip) must not keep the change from its subscribers."""
        done: list[ObjectEvent] = []
        try:
            yield done
        finally:
            self.emit(*done)

    def emit(self, *events: ObjectEvent) -> None:
        """Deliver ``events`` to every subscriber (call once the change has succeeded)."""
        for event in events:
            for subscriber in list(self._subscribers):
                self._deliver(subscriber, event)

    def _deliver(self, subscriber: _Subscriber, event: ObjectEvent) -> None:
        if not subscriber.active:
            return  # unsubscribed by a subscriber called before it, for this event
        try:
            result = subscriber.callback(event)
        except Exception:
            _log_failure(subscriber.callback, event)
            return
        if not inspect.isawaitable(result):
            return
        loop = asyncio.get_running_loop()
        previous = subscriber.tail
        if previous is not None and (previous.done() or previous.get_loop() is not loop):
            previous = None  # nothing to wait for (a task of another loop cannot be awaited)
        # a context of its own: the callback's requests are not counted against the write
        task = loop.create_task(
            _after(previous, result, subscriber.callback, event), context=contextvars.Context()
        )
        subscriber.tail = task
        with self._pending_lock:
            self._pending.add(task)
        task.add_done_callback(self._forget)
        if inspect.iscoroutine(result):
            # cancelled before its turn (aclose's deadline, the loop ending), the task
            # never awaited the callback's coroutine: closed, it does not warn so
            # (a no-op for one that ran)
            coroutine = result
            task.add_done_callback(lambda _: coroutine.close())

    def forked(self) -> None:
        """In a child forked from this process: a thread of the parent may have held the
        lock at the fork (it never releases it here), and the parent's deliveries run in
        the parent's loops, never in the child's."""
        self._pending_lock = threading.Lock()
        self._pending = set()

    def _forget(self, task: asyncio.Task[None]) -> None:
        with self._pending_lock:
            self._pending.discard(task)

    def _running(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[None]]:
        with self._pending_lock:
            return [task for task in self._pending if task.get_loop() is loop]

    async def drain(self) -> None:
        """Wait for the async deliveries of the running loop, those of the changes their
        callbacks make meanwhile included; cancel those still running after
        :data:`DRAIN_SECONDS` in all (logged)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while here := self._running(loop):
            left = deadline - loop.time()
            late: set[asyncio.Task[None]] = set(here)
            if left > 0:
                _, late = await asyncio.wait(here, timeout=left)
            if late:
                for task in late:
                    task.cancel()
                logger.warning("cancelled %d event callbacks still running at aclose", len(late))
                await asyncio.wait(late)
                return


async def _after(
    previous: asyncio.Task[None] | None,
    awaitable: Awaitable[None],
    callback: Callback,
    event: ObjectEvent,
) -> None:
    if previous is not None:
        await asyncio.wait([previous])  # its outcome is its own: logged there
    try:
        await awaitable
    except Exception:
        _log_failure(callback, event)


def _log_failure(callback: Callback, event: ObjectEvent) -> None:
    name = getattr(callback, "__qualname__", type(callback).__name__)
    logger.exception(
        "event callback %s failed on %s %r",
        name,
        event.type,
        event.key,
        extra={"operation": "event", "key": event.key, "event": event.type},
    )


# ---------------------------------------------------------------- S3 notifications

# "ObjectCreated:Put", ":Post", ":Copy", ":CompleteMultipartUpload"; "ObjectRemoved:Delete",
# ":DeleteMarkerCreated"; and "LifecycleExpiration:Delete", ":DeleteMarkerCreated": S3
# applying an expiry rule (AWS, "Supported event types for SQS, SNS, and Lambda")
_CREATED = ("ObjectCreated:",)
_REMOVED = ("ObjectRemoved:", "LifecycleExpiration:")


def parse_s3_event(message: Mapping[str, Any] | str | bytes, *, prefix: str) -> list[ObjectEvent]:
    """Turn an S3 bucket notification into :class:`ObjectEvent` values.

    Reads the ``Records`` JSON that S3 sends to SQS, SNS or Lambda, also inside an SNS
    envelope (whose ``Message`` is that JSON as a string). ``s3:ObjectCreated:*`` gives
    ``"created"`` (with size and ETag); ``s3:ObjectRemoved:*`` (a delete marker included)
    and ``s3:LifecycleExpiration:*`` (S3 applying an expiry rule) give ``"deleted"``.
    Keys arrive URL-encoded (``+`` for a space) and are decoded.

    The bucket is not checked: the records name it (``s3.bucket.name``), and a queue
    that only your bucket may send to (docs/events.md) is what keeps other senders out.

    Args:
        message: the notification, as a ``dict`` or its JSON text.
        prefix: the backend's S3 prefix (``STORAGE_S3_PREFIX``); keys are returned
            relative to it, and objects outside it are left out.

    Returns:
        The events in the order of the records. Left out: ``s3:TestEvent`` and other
        event types; a delete of one version by its id (``purge_versions``, a rule
        expiring noncurrent versions); names that are no valid key, and keys that are
        no URL encoding of a name (a bad ``%`` escape, bytes that are no UTF-8). A
        size that is no byte count, or an ETag no store issues, is ``None``.

    Raises:
        ValueError: ``message`` is not JSON, or not a notification: an EventBridge
            event, or the event of a Lambda function triggered by SQS or SNS (pass each
            of its records' ``body`` or ``Sns`` instead).
    """
    body = _as_mapping(message)
    if "Records" not in body and body.get("Type") == "Notification" and "Message" in body:
        body = _as_mapping(body["Message"])  # the SNS envelope
    if body.get("Event") == "s3:TestEvent":
        return []  # sent once when a notification is configured
    records = body.get("Records")
    if not isinstance(records, list):
        raise ValueError("not an S3 notification: no Records list")
    root = _root(prefix)
    events: list[ObjectEvent] = []
    for record in records:
        _refuse_batch(record)
        event = _event(record, root) if isinstance(record, Mapping) else None
        if event is not None:
            events.append(event)
    return events


def _refuse_batch(record: object) -> None:
    """A Lambda function triggered by SQS or SNS gets ``Records`` too, each one wrapping a
    notification: read as S3 records they would give no event at all, silently."""
    if not isinstance(record, Mapping):
        return
    if record.get("eventSource") == "aws:sqs":
        raise ValueError(
            "not an S3 notification: a Lambda batch of SQS messages; parse each record's body"
        )
    if record.get("EventSource") == "aws:sns":
        raise ValueError(
            "not an S3 notification: a Lambda batch of SNS notifications; parse each record's Sns"
        )


def _as_mapping(message: object) -> Mapping[str, Any]:
    if isinstance(message, str | bytes | bytearray):
        try:
            message = parse_json(message)  # bytes: UTF-8, as SQS bodies are
        except ValueError as exc:  # nested too deeply among them
            raise ValueError("not an S3 notification: invalid JSON") from exc
    if not isinstance(message, Mapping):
        raise ValueError("not an S3 notification: expected a JSON object")
    return message


def _root(prefix: str) -> str:
    """The backend's key root in the bucket, as the S3 backend builds it (``a/b/`` or ``""``)."""
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a str: the backend's S3 prefix")
    stripped = prefix.strip("/")
    return "" if not stripped else validate_prefix(stripped, "parse_s3_event")


def _event(record: Mapping[str, Any], root: str) -> ObjectEvent | None:
    name = record.get("eventName")
    if not isinstance(name, str):
        return None
    if name.startswith("s3:"):
        name = name[3:]  # the form of the notification configuration's event types
    if name.startswith(_CREATED):
        kind: Any = "created"
    elif name.startswith(_REMOVED):
        kind = "deleted"
    else:
        return None
    s3 = record.get("s3")
    obj = s3.get("object") if isinstance(s3, Mapping) else None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("key"), str):
        return None
    full = _decoded(obj["key"])
    if full is None or not full.startswith(root):
        return None
    try:
        key = validate_key(full[len(root) :], "parse_s3_event")
    except InvalidKeyError:
        return None  # a console "folder" (ends in "/") or a name this API cannot hold
    if kind == "deleted":
        if name.endswith(":Delete") and _one_version(obj.get("versionId")):
            # one version deleted for good (purge_versions, a rule expiring noncurrent
            # versions): the key still holds its latest one as a rule, and a "deleted"
            # would drop a live object from an index or a cache
            return None
        return ObjectEvent("deleted", key)
    return ObjectEvent("created", key, _size(obj.get("size")), _etag(obj.get("eTag")))


# a "%" not followed by two hex digits: S3 writes a "%" of a name as %25
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# what an entity tag holds between its quotes (RFC 9110 etagc, ASCII): S3's hex digest,
# "-" and the part count of a multipart upload
_ETAG = re.compile(r"[\x21\x23-\x7e]+")


def _decoded(encoded: str) -> str | None:
    """The name S3 URL-encoded (``+`` for a space) as ``encoded``; ``None`` when it is no
    such encoding: a bad escape, or bytes that are no UTF-8, which decoded with
    replacement characters would name another object."""
    if _BAD_ESCAPE.search(encoded):
        return None
    try:
        return unquote_to_bytes(encoded.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _one_version(version_id: object) -> bool:
    """True for a version id of a delete that named a version; absent or JSON null in an
    unversioned bucket, ``"null"`` the version of an object written before versioning
    (a plain delete of it adds a delete marker)."""
    return isinstance(version_id, str) and version_id not in ("", "null")


def _size(size: object) -> int | None:
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _etag(etag: object) -> str | None:
    """The ETag quoted, as ``stat`` gives it and ``if_match=`` takes it; ``None`` for what
    no store issues (a control character, a space, a quote inside, nothing)."""
    if not isinstance(etag, str):
        return None
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        etag = etag[1:-1]
    return f'"{etag}"' if _ETAG.fullmatch(etag) else None
