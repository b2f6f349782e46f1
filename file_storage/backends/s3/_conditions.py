"""Conditional writes on S3 servers that check only some of them.

``overwrite=False`` sends ``If-None-Match: *`` and ``if_match=`` sends ``If-Match``, on
PutObject and, for a multipart upload, on CompleteMultipartUpload (the object appears at
completion). AWS S3, MinIO and moto check both on both requests. Ceph RGW 16.2 (measured:
docs/compatibility.md) checks ``If-None-Match: *`` on PutObject, compares ``If-Match`` on
PutObject with the ETag *without* its quotes (so the quoted ETag that S3 clients send is
always refused, and the bare one is checked atomically), and ignores both conditions on
CompleteMultipartUpload and on CopyObject: a conditional multipart upload there would
replace whatever the key holds. moto 5 checks ``If-None-Match`` on completion but not
``If-Match``.

So before the first write that relies on one of these, the backend learns what its server
does with a probe on a private key under its prefix (:func:`probe`), once per backend, and
then either sends the condition in the form the server checks, or refuses the write with
:class:`StorageConfigError` before a byte is sent. No write with a condition ever goes
where the server would not check it. A create-only single PutObject, the common case,
needs no probe: every server measured checks it.

Deletes that must take only the version looked at (a move's source after its copy,
``migrate``'s moved source, an expired object) send ``If-Match`` on DeleteObject. AWS S3
(conditional deletes, 2024) and moto check it; Ceph RGW 16.2 ignores it and deletes
whatever the key holds. A server that ignores it deletes on a stale ETag, so that probe
(:func:`probe_delete`) runs on an object of its own too, and a server that does not check
gets a plain delete, as before (the check-then-delete documented in
docs/compatibility.md).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from file_storage.backends.s3._errors import (
    DENIED,
    NOT_FOUND,
    condition_error,
    error_code,
    is_outage,
)
from file_storage.errors import StorageConfigError

__all__ = ["PROBE_NAME", "Conditions", "Support", "probe", "probe_delete"]

logger = logging.getLogger("file_storage.backends.s3")

#: the probe's key under the prefix: a backslash, which the key grammar refuses, so no
#: listing, size total or quota count of the backend ever sees it while it exists
PROBE_NAME = ".file-storage-probe\\"
# an ETag no object has (the MD5 of nothing is d41d8cd9..., not this)
_STALE_ETAG = '"00000000000000000000000000000000"'

IfMatchForm = Literal["quoted", "bare"]
#: a write refused by a policy (not by credentials that have expired): kept as the answer
_POLICY_DENIED = frozenset({"AccessDenied", "403"})


@dataclass(frozen=True)
class Support:
    """What the server checks. ``if_match``: the form of ETag PutObject's ``If-Match``
    is compared with (``None``: not checked); ``completion``: the conditions
    CompleteMultipartUpload checks (``"IfNoneMatch"``, ``"IfMatch"``)."""

    if_match: IfMatchForm | None
    completion: frozenset[str]


class Conditions:
    """One per backend: the probe's answer, learnt on first need and kept.

    Writes that need it at the same moment, before it is known, may each probe (no lock
    that would tie the backend to one event loop); they reach the same answer, each on a
    private key of its own.
    """

    def __init__(self, root: str) -> None:
        self._root = root
        self.support: Support | None = None
        #: the form DeleteObject's ``If-Match`` is compared in; ``None``: not checked
        self.delete_form: IfMatchForm | None = None
        self.delete_probed = False

    def _probe_key(self) -> str:
        return f"{self._root}{PROBE_NAME}{uuid.uuid4().hex}"

    async def learn(self, client: Any, bucket: str) -> Support:
        """The server's support, probed on first call (a failed probe is not kept)."""
        if self.support is None:
            self.support = await probe(client, bucket, self._probe_key())
            logger.info(
                "S3 server checks If-Match on PutObject: %s; on CompleteMultipartUpload: %s",
                self.support.if_match or "no",
                ", ".join(sorted(self.support.completion)) or "nothing",
            )
        return self.support

    async def for_put(self, client: Any, bucket: str, condition: dict[str, str]) -> dict[str, str]:
        """The condition of a PutObject as the server checks it; ``If-None-Match: *``
        goes as it is, ``If-Match`` in the form the server compares."""
        etag = condition.get("IfMatch")
        if etag is None:
            return condition
        support = await self.learn(client, bucket)
        if support.if_match is None:
            raise StorageConfigError(
                "the S3 server does not check If-Match on PutObject: if_match= writes "
                "cannot be made safe there (docs/compatibility.md)"
            )
        if support.if_match == "bare":
            return {**condition, "IfMatch": etag.strip('"')}
        return condition

    async def for_delete(self, client: Any, bucket: str, etag: str) -> dict[str, str] | None:
        """The condition of a DeleteObject that deletes only the object with ``etag``, in
        the form the server compares; ``None``: the server does not check one."""
        if not await self.checks_delete(client, bucket):
            return None
        return {"IfMatch": etag.strip('"') if self.delete_form == "bare" else etag}

    async def checks_delete(self, client: Any, bucket: str) -> bool:
        """Whether the server checks ``If-Match`` on DeleteObject (probed on first call)."""
        if not self.delete_probed:
            self.delete_form = await probe_delete(client, bucket, self._probe_key())
            self.delete_probed = True
            logger.info("S3 server checks If-Match on DeleteObject: %s", self.delete_form or "no")
        return self.delete_form is not None

    async def for_completion(
        self, client: Any, bucket: str, condition: dict[str, str], threshold: int
    ) -> None:
        """Refuse, before anything is uploaded, a conditional multipart upload that the
        server would complete without checking its condition."""
        support = await self.learn(client, bucket)
        unchecked = sorted(set(condition) - support.completion)
        if unchecked:
            header = "If-None-Match" if unchecked[0] == "IfNoneMatch" else "If-Match"
            what = "create-only" if unchecked[0] == "IfNoneMatch" else "if_match"
            raise StorageConfigError(
                f"the S3 server does not check {header} on CompleteMultipartUpload, so a "
                f"{what} write above multipart_threshold ({threshold} bytes) could replace "
                "the object: nothing was sent. Raise multipart_threshold "
                "(STORAGE_S3_MULTIPART_THRESHOLD_MB) or write without the condition "
                "(docs/compatibility.md)"
            )


async def probe(client: Any, bucket: str, key: str) -> Support:
    """Try each condition on ``key`` (an object of our own, removed afterwards)."""
    first = await client.put_object(Bucket=bucket, Key=key, Body=b"1")
    try:
        if_match = await _if_match_form(client, bucket, key, str(first["ETag"]))
        # the key exists and never has the stale ETag: both conditions must refuse
        completion = frozenset(
            [
                name
                for name, value in (("IfNoneMatch", "*"), ("IfMatch", _STALE_ETAG))
                if await _completion_refused(client, bucket, key, {name: value})
            ]
        )
    finally:
        await asyncio.shield(_remove(client, bucket, key))
    return Support(if_match, completion)


async def probe_delete(client: Any, bucket: str, key: str) -> IfMatchForm | None:
    """Delete ``key`` (an object of our own) on a stale ETag, which must be refused, then
    on its own: the form DeleteObject's ``If-Match`` is checked in (``None``: not
    checked, or the probe's object could not be written: denied)."""
    try:
        etag = str((await client.put_object(Bucket=bucket, Key=key, Body=b"1"))["ETag"])
    except Exception as exc:
        if error_code(exc) not in _POLICY_DENIED:
            raise  # an outage, or credentials refused (expired): probed again next time
        # a source the credentials may read and delete but not write (a migration's):
        # its deletes stay plain, as they were
        logger.warning("could not probe conditional deletes (access denied): plain deletes")
        return None
    try:
        stale = client.delete_object(Bucket=bucket, Key=key, IfMatch=_STALE_ETAG)
        try:
            refused = await _refused(stale)
        except Exception as exc:
            if error_code(exc) not in _POLICY_DENIED:
                raise
            # deletes denied by a policy: every delete fails as before, and a probe at
            # each one would leave an object it cannot remove each time
            logger.warning("could not probe conditional deletes (access denied): plain deletes")
            return None
        if refused is not True:
            return None  # deleted on a stale ETag (or the header is unknown): not checked
        for form, value in (("quoted", etag), ("bare", etag.strip('"'))):
            current = client.delete_object(Bucket=bucket, Key=key, IfMatch=value)
            # refused, yet gone: botocore resent a delete that landed (its answer lost),
            # and the resend found nothing (404, or 412 from a server that answers so):
            # no one else knows this key, so this form deleted it
            refused = await _refused(current)
            if refused is False or not await _exists(client, bucket, key):
                return "quoted" if form == "quoted" else "bare"
        return None
    finally:
        await asyncio.shield(_remove(client, bucket, key))


async def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        await client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        if error_code(exc) in NOT_FOUND:
            return False
        raise
    return True


async def _refused(request: Any) -> bool | None:
    """True: refused as a failed condition; False: done; None: refused otherwise (the
    server does not know the header). An outage or a denial is raised."""
    try:
        await request
    except Exception as exc:
        if condition_error(exc, create_only=False) is not None:
            return True
        if error_code(exc) == "NotImplemented":  # a 501 for the header: not checked
            return None
        if is_outage(exc) or error_code(exc) in DENIED or error_code(exc) is None:
            raise
        return None
    return False


async def _if_match_form(client: Any, bucket: str, key: str, etag: str) -> IfMatchForm | None:
    stale = client.put_object(Bucket=bucket, Key=key, Body=b"2", IfMatch=_STALE_ETAG)
    if await _refused(stale) is not True:
        return None  # a stale ETag passes (or the header is unknown): not checked
    for form, value in (("quoted", etag), ("bare", etag.strip('"'))):
        current = client.put_object(Bucket=bucket, Key=key, Body=b"3", IfMatch=value)
        if await _refused(current) is False:
            return "quoted" if form == "quoted" else "bare"
    return None


async def _completion_refused(
    client: Any, bucket: str, key: str, condition: dict[str, str]
) -> bool:
    """Complete an upload to ``key`` under ``condition``, which must fail there: checked
    when refused. The upload is aborted either way."""
    upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
    try:
        part = await client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"4"
        )
        completion = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            **condition,
        )
        return await _refused(completion) is True
    finally:
        await asyncio.shield(_abort(client, bucket, key, upload_id))


async def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as exc:
        if error_code(exc) != "NoSuchUpload":  # completed: nothing left to abort
            logger.warning("could not abort the probe's upload (%s)", type(exc).__name__)


async def _remove(client: Any, bucket: str, key: str) -> None:
    try:
        await client.delete_object(Bucket=bucket, Key=key)
    except Exception as exc:
        logger.warning("could not delete the conditional-write probe (%s)", type(exc).__name__)
