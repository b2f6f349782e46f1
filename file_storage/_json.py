"""JSON the library reads back: its own files on disk and documents from outside.

Every such document goes through :func:`parse_json`. ``json.loads`` raises
``RecursionError`` for arrays or objects nested deeper than the interpreter's stack
allows (``[[[[...]]]]``, a few kilobytes, is enough); that is no bug of the caller but a
damaged or hostile document, so it is raised as the ``ValueError`` of any other invalid
JSON, which every caller already handles (a typed error for public input, "damaged" for
a stored file).
"""

from __future__ import annotations

import json
from typing import Any


def parse_json(data: str | bytes | bytearray) -> Any:
    """``json.loads(data)``; ``ValueError`` for invalid JSON, nesting too deep included."""
    try:
        return json.loads(data)
    except RecursionError:
        # the document is at fault, not the interpreter: no RecursionError to chain
        raise ValueError("invalid JSON: nested too deeply") from None
