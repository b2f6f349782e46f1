"""The signed policy of the local backend's form uploads (``get_presigned_post``).

A form carries ``expires`` (unix seconds), ``max_bytes`` (empty: no cap),
``content_type`` and ``signature`` = HMAC-SHA256(signing key,
``"file_storage-post-2\\n<binding>\\n<key>\\n<expires>\\n<max_bytes>\\n<content_type>"``),
hex. The key is the URL's path, as for presigned GET and PUT URLs, and the binding the
same as theirs (``_signing.binding``: the router's mount path and the backend's store), so
a form is answered only by the router of the backend that signed it. A URL signature
never passes for a form's (its message opens with another tag) nor the reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import quote

from pydantic import SecretStr

from file_storage._signing import Verdict, binding, presign, timely
from file_storage.models import PresignedPost

FIELDS = ("expires", "max_bytes", "content_type", "signature")
_MAX_DIGITS = 20  # far beyond any expiry or size; keeps int() away from huge digit strings
# opens every form message: none signed before forms were bound (which began "POST")
# nor any URL's reads the same
_POST_TAG = "file_storage-post-2"


def _digest(
    secret: str, key: str, expires: int, max_bytes: str, content_type: str, *, bound: str
) -> str:
    message = f"{_POST_TAG}\n{bound}\n{key}\n{expires}\n{max_bytes}\n{content_type}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_post(
    base_url: str,
    key: str,
    expires_in: int,
    max_bytes: int | None,
    content_type: str,
    secret: str,
    *,
    bound: str,
    now: float | None = None,
) -> PresignedPost:
    """The form upload to ``<base_url>/<quoted key>`` with its signed fields, bound to
    ``bound`` (``_signing.binding``)."""
    expires = int(now if now is not None else time.time()) + expires_in
    cap = "" if max_bytes is None else str(max_bytes)
    fields = {
        "expires": str(expires),
        "max_bytes": cap,
        "content_type": content_type,
        "signature": _digest(secret, key, expires, cap, content_type, bound=bound),
    }
    return PresignedPost(f"{base_url.rstrip('/')}/{quote(key, safe='/')}", fields)


def presign_post(
    base_url: str | None,
    secret: SecretStr | None,
    key: str,
    expires_in: int,
    max_bytes: int | None,
    content_type: str,
    *,
    place: str,
) -> PresignedPost:
    """A form upload for ``signed_url_router`` (local and memory backends)."""
    if not base_url or secret is None:
        # raises what is missing
        presign(base_url, secret, key, "PUT", expires_in, None, None, place=place)
    assert base_url
    assert secret is not None
    return sign_post(
        base_url,
        key,
        expires_in,
        max_bytes,
        content_type,
        secret.get_secret_value(),
        bound=binding(base_url, place),
    )


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS


def check_post(
    key: str, fields: Mapping[str, str], secret: str, *, bound: str, now: float | None = None
) -> Verdict:
    """Say whether a form's signed fields are valid for ``key`` where the router checking
    them serves (``bound``) and unexpired."""
    expires = fields.get("expires", "")
    cap = fields.get("max_bytes", "")
    signature = fields.get("signature", "")
    if not secret or not signature or not _digits(expires) or (cap and not _digits(cap)):
        return "invalid"
    expected = _digest(secret, key, int(expires), cap, fields.get("content_type", ""), bound=bound)
    # in constant time, as bytes (compare_digest refuses non-ASCII str)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return "invalid"
    return timely(int(expires), now)
