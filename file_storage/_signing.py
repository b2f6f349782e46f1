"""HMAC-SHA256 signatures for the local backend's presigned URLs.

A URL carries ``expires`` (unix seconds) and ``signature`` =
HMAC-SHA256(signing key, ``"<METHOD>\\n<key>\\n<expires>"``), hex. The method is
signed, so a GET URL never works for PUT and the reverse.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal
from urllib.parse import quote, urlencode

Verdict = Literal["valid", "invalid", "expired"]

MIN_SIGNING_KEY_CHARS = 32
# far beyond any real expiry; keeps int() away from huge digit strings (and its 4300-digit limit)
_MAX_EXPIRES_DIGITS = 20


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


def check(
    key: str,
    method: str,
    expires: str | None,
    signature: str | None,
    secret: str,
    *,
    now: float | None = None,
) -> Verdict:
    """Say whether a URL's ``expires`` and ``signature`` are valid for this method and key.

    ``"expired"`` only for a genuine signature, so a forger learns nothing from it.
    """
    if not secret:  # an empty key signs nothing: anyone could compute its signatures
        return "invalid"
    if not expires or not signature or len(expires) > _MAX_EXPIRES_DIGITS:
        return "invalid"
    # str.isdigit() alone accepts "²" and other digits that int() refuses
    if not (expires.isascii() and expires.isdigit()):
        return "invalid"
    expected = _digest(secret, method, key, int(expires)).encode()
    # compare first, in constant time, so timing says nothing about the signature; as
    # bytes, because compare_digest refuses str with non-ASCII characters
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return "invalid"
    if int(expires) < (now if now is not None else time.time()):
        return "expired"
    return "valid"


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
    return check(key, method, expires, signature, secret, now=now) == "valid"
