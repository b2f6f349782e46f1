"""Service SAS URLs for one blob, signed with the account key (stdlib HMAC-SHA256).

obstore signs the percent-encoded path, which Azure (and Azurite) verify against the
decoded blob name: a key with a space or a non-ASCII letter would get a URL that is
refused. The string to sign is Azure's "Create a service SAS", version 2020-12-06 and
later (learn.microsoft.com/rest/api/storageservices/create-service-sas).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

__all__ = ["service_sas_url"]

SAS_VERSION = "2023-11-03"
# a URL made now is accepted by a server whose clock is a little behind
CLOCK_SKEW = timedelta(minutes=5)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def service_sas_url(
    *,
    endpoint: str,
    account: str,
    account_key: str,
    container: str,
    name: str,
    method: str,
    expires_in: int,
    content_type: str | None = None,
    disposition: str | None = None,
    now: datetime | None = None,
) -> str:
    """A URL allowing ``method`` (GET reads, PUT writes, DELETE deletes) on one blob for
    ``expires_in`` s.

    GET: ``content_type`` and ``disposition`` become the response's headers (``rsct``,
    ``rscd``, signed). A SAS cannot require a request header: a PUT's uploader sends the
    ``Content-Type`` the blob gets, and ``x-ms-blob-type: BlockBlob``.
    """
    now = now or datetime.now(UTC)
    # GET reads, PUT creates or writes, DELETE deletes that one blob
    permissions = {"GET": "r", "PUT": "cw", "DELETE": "d"}[method]
    start, expiry = _stamp(now - CLOCK_SKEW), _stamp(now + timedelta(seconds=expires_in))
    resource = f"/blob/{account}/{container}/{name}"
    to_sign = "\n".join(
        [
            permissions,
            start,
            expiry,
            resource,
            "",  # signed identifier
            "",  # signed IP
            "",  # signed protocol
            SAS_VERSION,
            "b",  # signed resource: a blob
            "",  # snapshot time
            "",  # encryption scope
            "",  # rscc
            disposition or "",  # rscd
            "",  # rsce
            "",  # rscl
            content_type or "",  # rsct
        ]
    )
    overrides: dict[str, str] = {}
    if disposition is not None:
        overrides["rscd"] = disposition
    if content_type is not None:
        overrides["rsct"] = content_type
    digest = hmac.new(base64.b64decode(account_key), to_sign.encode(), hashlib.sha256).digest()
    fields = {
        "sv": SAS_VERSION,
        "sp": permissions,
        "st": start,
        "se": expiry,
        "sr": "b",
        **overrides,
        "sig": base64.b64encode(digest).decode(),
    }
    query = "&".join(f"{field}={quote(value, safe='')}" for field, value in fields.items())
    return f"{endpoint}/{quote(container)}/{quote(name, safe='/')}?{query}"
