"""V4 signed URLs for GCS, made with the service account's private key.

object_store signs through the IAM ``signBlob`` API unless it holds the key itself, and
never with a key when OAuth is disabled (emulators); signing locally costs no request and
works the same everywhere. The algorithm is Google's "V4 signing process with your own
program" (cloud.google.com/storage/docs/access-control/signing-urls-manually), RSA-SHA256
from ``cryptography``, imported on the first URL.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from file_storage.errors import StorageConfigError

__all__ = ["signed_url"]

ALGORITHM = "GOOG4-RSA-SHA256"


def _rsa_sign(private_key_pem: str, payload: bytes) -> bytes:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError as exc:
        raise StorageConfigError(
            "signing GCS URLs needs cryptography: pip install 'file_storage[gcs]'"
        ) from exc
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise StorageConfigError("the service account's private_key is not a PEM key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise StorageConfigError("the service account's private_key is not an RSA key")
    return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())


def signed_url(
    *,
    endpoint: str,
    bucket: str,
    name: str,
    method: str,
    expires_in: int,
    client_email: str,
    private_key: str,
    content_type: str | None = None,
    disposition: str | None = None,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> str:
    """A URL allowing ``method`` on ``bucket/name`` for ``expires_in`` seconds.

    GET: ``content_type`` and ``disposition`` become the response's headers
    (``response-content-type``, ``response-content-disposition``). PUT: ``content_type``
    is a signed header, so the uploader must send exactly that ``Content-Type``.
    ``headers``: more headers the request must send exactly so (signed), such as the
    ``x-goog-if-generation-match`` of a conditional DELETE.
    """
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now.strftime('%Y%m%d')}/auto/storage/goog4_request"
    parts = urlsplit(endpoint)
    path = f"{parts.path.rstrip('/')}/{quote(bucket, safe='')}/{quote(name, safe='/~')}"
    params = {
        "X-Goog-Algorithm": ALGORITHM,
        "X-Goog-Credential": f"{client_email}/{scope}",
        "X-Goog-Date": stamp,
        "X-Goog-Expires": str(expires_in),
    }
    signed_headers = {"host": parts.netloc}
    signed_headers.update((name.lower(), value.strip()) for name, value in (headers or {}).items())
    if method == "PUT" and content_type is not None:
        signed_headers["content-type"] = content_type
    if method == "GET" and content_type is not None:
        params["response-content-type"] = content_type
    if method == "GET" and disposition is not None:
        params["response-content-disposition"] = disposition
    signed = ";".join(sorted(signed_headers))
    params["X-Goog-SignedHeaders"] = signed
    query = "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(params.items())
    )
    canonical_headers = "".join(
        f"{name}:{signed_headers[name]}\n" for name in sorted(signed_headers)
    )
    canonical = "\n".join([method, path, query, canonical_headers, signed, "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = binascii.hexlify(_rsa_sign(private_key, to_sign.encode())).decode()
    return f"{parts.scheme}://{parts.netloc}{path}?{query}&X-Goog-Signature={signature}"
