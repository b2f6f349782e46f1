"""Content type from a key's extension."""

from __future__ import annotations

import functools
import mimetypes

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# The types our users store most, pinned: the stdlib's table misses some (.ts, .m4s,
# .mpd, .yaml, .zst) and changes others between Python versions (.wav, .js), and a
# key's content type must be the same on every backend, platform and Python.
_EXTRA = {
    # video, including HLS/DASH segments and manifests
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mpd": "application/dash+xml",
    ".m3u8": "application/vnd.apple.mpegurl",
    # audio
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".opus": "audio/opus",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    # images
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    # text and data
    ".txt": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".har": "application/json",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".xml": "application/xml",
    ".parquet": "application/vnd.apache.parquet",
    ".pdf": "application/pdf",
    # archives and compression
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".zst": "application/zstd",
    ".bz2": "application/x-bzip2",
    ".xz": "application/x-xz",
    ".7z": "application/x-7z-compressed",
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
