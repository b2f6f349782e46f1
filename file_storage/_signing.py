"""HMAC-SHA256 signatures for the local backend's presigned URLs.

A URL carries ``expires`` (unix seconds) and ``signature`` =
HMAC-SHA256(signing key, ``"<METHOD>\\n<key>\\n<expires>"``), hex. The method is
signed, so a GET URL never works for PUT and the reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

Method = str

MIN_SIGNING_KEY_CHARS = 32


def _digest(secret: str, method: str, key: str, expires: int) -> str:
    message = f"{method}\n{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_url(
    base_url: str, key: str, method: str, expires_in: int, secret: str, *, now: float | None = None
) -> str:
    """Return ``<base_url>/<quoted key>?expires=...&signature=...``."""
    expires = int(now if now is not None else time.time()) + expires_in
    query = urlencode({"expires": expires, "signature": _digest(secret, method, key, expires)})
    return f"{base_url.rstrip('/')}/{quote(key, safe='/')}?{query}"


def verify(
    key: str,
    method: str,
    expires: str | None,
    signature: str | None,
    secret: str,
    *,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is valid for this method and key and has not expired."""
    if not expires or not signature or not expires.isdigit():
        return False
    expected = _digest(secret, method, key, int(expires))
    # compare first, in constant time, so timing says nothing about the signature
    valid = hmac.compare_digest(expected, signature)
    return valid and int(expires) >= (now if now is not None else time.time())
