"""Metadata names on obstore's stores: which attributes are obstore's own, and the escape
that carries a user's name colliding with one (or not allowed by the store) unchanged."""

from __future__ import annotations

__all__ = ["ESCAPE", "RESERVED", "STANDARD", "escape_name", "unescape_name"]

# the attributes obstore names itself; every other name it returns is user metadata
STANDARD = frozenset(
    {
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Type",
        "Cache-Control",
        "Storage-Class",
    }
)
# obstore takes a metadata name equal to one of those, in any case, for that header (a
# user's "content-type" would set the object's type): such a name, and one that starts
# like the escape itself, travels hex-encoded behind it and comes back as given (and only
# such a name is decoded)
RESERVED = frozenset(name.lower() for name in STANDARD)
ESCAPE = "fs_"


def escape_name(name: str) -> str:
    """``name`` hex-encoded behind :data:`ESCAPE`."""
    return ESCAPE + name.encode().hex()


def unescape_name(name: str) -> str:
    """The name :func:`escape_name` encoded; any other name lower-cased, as it is."""
    name = name.lower()
    if name.startswith(ESCAPE):
        try:
            return bytes.fromhex(name[len(ESCAPE) :]).decode()
        except ValueError:
            return name  # another tool's name that only looks encoded
    return name
