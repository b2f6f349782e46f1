"""The header helpers: charset on text types, RFC 6266 names."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from file_storage._http import content_disposition, with_charset


@pytest.mark.parametrize(
    ("stored", "served"),
    [
        ("text/plain", "text/plain; charset=utf-8"),
        ("text/csv;", "text/csv; charset=utf-8"),
        ("application/json", "application/json; charset=utf-8"),
        ("application/ld+json", "application/ld+json; charset=utf-8"),
        ("Application/X-NDJSON", "Application/X-NDJSON; charset=utf-8"),
        ("text/plain; charset=latin-1", "text/plain; charset=latin-1"),
        ("text/html; Charset=UTF-8", "text/html; Charset=UTF-8"),
        ("image/svg+xml", "image/svg+xml"),
        ("application/octet-stream", "application/octet-stream"),
    ],
)
def test_with_charset(stored: str, served: str) -> None:
    assert with_charset(stored) == served


def test_content_disposition_keeps_any_unicode_name() -> None:
    assert content_disposition("Отпуск 2026.mp4") == (
        'attachment; filename="______ 2026.mp4"; '
        "filename*=UTF-8''%D0%9E%D1%82%D0%BF%D1%83%D1%81%D0%BA%202026.mp4"
    )


@pytest.mark.parametrize(
    ("filename", "kept"),
    [
        ("a" * 300 + ".tar.gz", "a" * 252 + ".gz"),
        ("é" * 200, "é" * 127),  # never half a character
        ("x." + "e" * 300, "x." + "e" * 253),  # no extension worth keeping: cut at the end
        ("a" * 255, "a" * 255),
    ],
    ids=["extension-kept", "utf-8-boundary", "long-extension", "at-the-limit"],
)
def test_content_disposition_cuts_names_to_255_utf8_bytes(filename: str, kept: str) -> None:
    header = content_disposition(filename)
    assert header.endswith("filename*=UTF-8''" + quote(kept, safe=""))
