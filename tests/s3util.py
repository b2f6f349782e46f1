"""Small helpers for tests that look at the moto server directly."""

from __future__ import annotations

import socket
from typing import Any


def stored_keys(raw: Any, bucket: str) -> list[str]:
    """Every key the server holds in ``bucket``, prefix included."""
    return [item["Key"] for item in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]


def open_uploads(raw: Any, bucket: str) -> list[Any]:
    """Multipart uploads started and neither completed nor aborted."""
    uploads: list[Any] = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def closed_port() -> int:
    """A loopback port nothing listens on (a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
