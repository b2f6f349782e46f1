"""HMAC-SHA256 signatures for the local backend's presigned URLs.

A URL carries ``expires`` (unix seconds) and ``signature`` = HMAC-SHA256(signing key,
``"file_storage-url-2\\n<METHOD>\\n<binding>\\n<key>\\n<expires>"``), hex. The method is
signed, so a GET URL never works for PUT and the reverse. ``binding`` (see
:func:`binding`) names where the URL was issued: the path of the base URL the router is
mounted at and the store the backend serves (a local root folder, a memory backend), so
two routers sharing one signing key never accept each other's URLs. A URL with presign
options (``content_type``, ``filename``) carries them in its query and signs them too, as
two more lines, so none can be added, changed or dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Literal
from urllib.parse import quote, urlencode, urlsplit

from pydantic import SecretStr

from file_storage.errors import StorageConfigError

# "late": a genuine signature whose expiry lies further out than any presign may reach
Verdict = Literal["valid", "invalid", "expired", "late"]

MIN_SIGNING_KEY_CHARS = 32
MAX_PRESIGN_SECONDS = 604800  # 7 days: SigV4's maximum (AWS, "Sharing objects with presigned URLs")
# the clock skew S3 allows between a request's signer and the server (15 minutes)
_CLOCK_SKEW_SECONDS = 900
# far beyond any real expiry; keeps int() away from huge digit strings (and its 4300-digit limit)
_MAX_EXPIRES_DIGITS = 20
_ABSENT = "\x00"  # an option left out of the signed message
# opens every URL message: none signed before URLs were bound (which began with the
# method) nor any form's (_post_policy) reads the same
_URL_TAG = "file_storage-url-2"


def binding(base_url: str, place: str) -> str:
    """What a URL or form is bound to: the path of ``base_url`` (where the router is
    mounted, as the client sees it: a proxy may strip a prefix before the app) and
    ``place``, the store the backend serves. JSON, so no two pairs read alike."""
    return json.dumps([urlsplit(base_url).path.rstrip("/"), place])


def _digest(
    secret: str,
    method: str,
    key: str,
    expires: int,
    content_type: str | None = None,
    filename: str | None = None,
    *,
    bound: str,
) -> str:
    message = f"{_URL_TAG}\n{method}\n{bound}\n{key}\n{expires}"
    if content_type is not None or filename is not None:
        # _ABSENT marks an absent option: no value signed can spell it (header values are
        # visible ASCII; a file name with NUL is refused), so "" and absent never sign
        # alike, and check() refuses one sent
        message += f"\n{_opt(content_type)}\n{_opt(filename)}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _opt(value: str | None) -> str:
    return _ABSENT if value is None else value


def sign_url(
    base_url: str,
    key: str,
    method: str,
    expires_in: int,
    secret: str,
    *,
    bound: str,
    now: float | None = None,
    content_type: str | None = None,
    filename: str | None = None,
) -> str:
    """Return ``<base_url>/<quoted key>?expires=...&signature=...`` (options before the
    signature: ``content_type=``, ``filename=``), bound to ``bound`` (:func:`binding`)."""
    expires = int(now if now is not None else time.time()) + expires_in
    params: dict[str, str | int] = {"expires": expires}
    if content_type is not None:
        params["content_type"] = content_type
    if filename is not None:
        params["filename"] = filename
    params["signature"] = _digest(secret, method, key, expires, content_type, filename, bound=bound)
    return f"{base_url.rstrip('/')}/{quote(key, safe='/')}?{urlencode(params)}"


def check(
    key: str,
    method: str,
    expires: str | None,
    signature: str | None,
    secret: str,
    *,
    bound: str,
    now: float | None = None,
    content_type: str | None = None,
    filename: str | None = None,
) -> Verdict:
    """Say whether a URL's ``expires`` and ``signature`` are valid for this method and key
    where the router checking it serves (``bound``, :func:`binding`).

    ``"expired"`` and ``"late"`` only for a genuine signature, so a forger learns nothing
    from them.
    """
    if not secret:  # an empty key signs nothing: anyone could compute its signatures
        return "invalid"
    if not expires or not signature or len(expires) > _MAX_EXPIRES_DIGITS:
        return "invalid"
    if _ABSENT in (content_type or "") or _ABSENT in (filename or ""):
        # no signed value holds it: sent, it would spell an absent option, so an option
        # could be added to a URL signed with only the other one
        return "invalid"
    # str.isdigit() alone accepts "²" and other digits that int() refuses
    if not (expires.isascii() and expires.isdigit()):
        return "invalid"
    expected = _digest(
        secret, method, key, int(expires), content_type, filename, bound=bound
    ).encode()
    # compare first, in constant time, so timing says nothing about the signature; as
    # bytes, because compare_digest refuses str with non-ASCII characters
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return "invalid"
    return timely(int(expires), now)


def timely(expires: int, now: float | None = None) -> Verdict:
    """``"expired"`` past ``expires``; ``"late"`` when no presign could have set it (a
    signer whose clock ran ahead would otherwise hand out URLs living for months)."""
    current = now if now is not None else time.time()
    if expires < current:
        return "expired"
    if expires > current + MAX_PRESIGN_SECONDS + _CLOCK_SKEW_SECONDS:
        return "late"
    return "valid"


def verify(
    key: str,
    method: str,
    expires: str | None,
    signature: str | None,
    secret: str,
    *,
    bound: str,
    now: float | None = None,
) -> bool:
    """True when ``signature`` is valid for this method, key and binding, and has not expired."""
    return check(key, method, expires, signature, secret, bound=bound, now=now) == "valid"


def signing_key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a signing key, or ``None`` when it can."""
    if len(value) < MIN_SIGNING_KEY_CHARS:
        return f"must be at least {MIN_SIGNING_KEY_CHARS} characters"
    text = value.strip()
    # `KEY=$(python -c ...)` copied into a .env file: dotenv runs no command, so the key
    # would be that text, which anyone who read the same line can sign URLs with
    if (text.startswith("$(") and text.endswith(")")) or (
        len(text) > 1 and text.startswith("`") and text.endswith("`")
    ):
        return (
            "is a shell command that was never run (a .env file runs none): set the key it prints"
        )
    return None


def signing_key(value: str | SecretStr | None) -> SecretStr | None:
    """A backend's ``signing_key=`` argument, wrapped; a bad one raises StorageConfigError."""
    wrapped = SecretStr(value) if isinstance(value, str) else value
    if wrapped is not None and (problem := signing_key_problem(wrapped.get_secret_value())):
        raise StorageConfigError(f"signing_key (STORAGE_LOCAL_SIGNING_KEY) {problem}")
    return wrapped


def presign(
    base_url: str | None,
    secret: SecretStr | None,
    key: str,
    method: str,
    expires_in: int,
    content_type: str | None,
    filename: str | None,
    *,
    place: str,
) -> str:
    """A URL for ``signed_url_router`` (local and memory backends)."""
    if not base_url or secret is None:
        raise StorageConfigError(
            "signed URLs need STORAGE_LOCAL_BASE_URL and STORAGE_LOCAL_SIGNING_KEY "
            "(base_url= and signing_key=), and the app mounting "
            "file_storage.fastapi.signed_url_router at that URL"
        )
    return sign_url(
        base_url,
        key,
        method,
        expires_in,
        secret.get_secret_value(),
        bound=binding(base_url, place),
        content_type=content_type,
        filename=filename,
    )
