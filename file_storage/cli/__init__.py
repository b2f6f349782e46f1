"""The ``file-storage`` command line (extra ``file_storage[cli]``).

``file-storage ls|stat|cat|get|put|rm|du|url|migrate``, on the backend that the same
``STORAGE_*`` settings (and ``--env-file``) select. Exit codes: 0 ok, 1 the operation
failed, 2 a usage error. ``python -m file_storage`` runs it too.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]

_EXTRA = ("click", "rich")


def main(args: Sequence[str] | None = None) -> None:
    """Run the command line (the ``file-storage`` console script)."""
    # rich is imported only when a progress bar is shown, so its absence is checked here:
    # click alone is common (uvicorn brings it), and a transfer must not start only to end
    # in a traceback at its first bar
    if any(importlib.util.find_spec(name) is None for name in _EXTRA):
        _missing_extra()
    try:
        from file_storage.cli._app import app
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA:
            raise
        _missing_extra()
    app.main(args=list(args) if args is not None else None, prog_name="file-storage")


def _missing_extra() -> NoReturn:
    sys.stderr.write(
        "file-storage: the command line needs the cli extra: pip install 'file_storage[cli]'\n"
    )
    raise SystemExit(1)
