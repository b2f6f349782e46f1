"""Content type from a key's extension."""

from __future__ import annotations

import functools
import mimetypes

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# Types the stdlib table misses or gets wrong on some platforms (its table is read
# from /etc/mime.types where present, so pin the ones our users store most).
_EXTRA = {
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".har": "application/json",
    ".parquet": "application/vnd.apache.parquet",
}

_db = mimetypes.MimeTypes()


def guess_content_type(key: str) -> str:
    """The MIME type for ``key``'s last extension, or ``application/octet-stream``."""
    name = key.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return _by_extension(name[dot:].lower()) if dot > 0 else DEFAULT_CONTENT_TYPE


@functools.lru_cache(maxsize=1024)
def _by_extension(ext: str) -> str:
    if ext in _EXTRA:
        return _EXTRA[ext]
    guessed, _encoding = _db.guess_type("x" + ext, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE
