"""The registry of backends: the ``file_storage.backends`` entry-point group.

Every backend ``STORAGE_TYPE`` can name is an entry point in that group, the built-in ones
too (pyproject.toml), so there is one way to find a backend. The entry point's name is the
``STORAGE_TYPE`` value (any case); its object is a callable taking the
:class:`~file_storage.settings.StorageSettings` and returning a
:class:`~file_storage.backends.base.StorageBackend`. Listing the names reads only the
installed distributions' metadata: a backend's module is imported when it is selected.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from pydantic import ValidationError

from file_storage.errors import StorageConfigError, StorageError

if TYPE_CHECKING:
    from file_storage.backends.base import StorageBackend
    from file_storage.settings import StorageSettings

__all__ = ["GROUP", "BackendFactory", "backend_names", "load_backend_factory"]

GROUP = "file_storage.backends"

BackendFactory = Callable[["StorageSettings"], "StorageBackend"]


def _registered() -> dict[str, list[EntryPoint]]:
    """The installed entry points by upper-cased name, one per distinct object."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=GROUP):
        same_name = found.setdefault(entry.name.strip().upper(), [])
        if all(known.value != entry.value for known in same_name):  # a stale egg-info twin
            same_name.append(entry)
    return found


def backend_names() -> list[str]:
    """The ``STORAGE_TYPE`` values the installed packages register, upper-cased and sorted."""
    return sorted(_registered())


def load_backend_factory(name: str) -> BackendFactory:
    """Import the backend registered as ``name`` (any case) and return its factory.

    The factory returned raises only :class:`StorageError`: anything else the plugin's
    callable raises while it builds the backend (a ``TypeError``, a ``KeyError``, its own
    settings' ``ValidationError``) becomes a :class:`StorageConfigError` naming the
    backend and the exception's type, the exception chained as ``__cause__``. An async
    factory (a coroutine function, or one returning a coroutine) is a
    :class:`StorageConfigError` too, its coroutine closed unawaited.

    Raises:
        StorageConfigError: no installed package registers ``name`` (the message lists the
            names that are registered), or its module cannot be imported or raises
            when imported (the plugin's exception chained as ``__cause__``).
    """
    registered = _registered()
    entries = registered.get(name.strip().upper())
    if not entries:
        raise StorageConfigError(
            f"STORAGE_TYPE: must be one of {', '.join(sorted(registered)) or '(none installed)'}"
        )
    if len(entries) > 1:
        # which one would win depends on the order of sys.path: refuse to guess
        objects = ", ".join(sorted(entry.value for entry in entries))
        raise StorageConfigError(
            f"STORAGE_TYPE: {name.strip().upper()} is registered by several installed "
            f"packages ({objects}); uninstall all but one"
        )
    entry = entries[0]
    try:
        factory = entry.load()
    except ModuleNotFoundError as exc:
        # named from the attribute, not the text: a plugin may raise one of its own
        missing = f"No module named {exc.name!r}" if exc.name else type(exc).__name__
        raise StorageConfigError(f"{_backend(entry)} cannot be imported: {missing}") from exc
    except ImportError as exc:
        raise StorageConfigError(
            f"{_backend(entry)} cannot be imported: {_what(exc)} (chained below)"
        ) from exc
    except Exception as exc:  # the plugin's module ran and raised: its bug, or its config
        # only the type: a plugin's message may quote anything (its settings, a secret);
        # the error itself stays chained for the traceback. KeyboardInterrupt and
        # SystemExit are no Exception: they pass through.
        raise StorageConfigError(
            f"{_backend(entry)} failed to load: {_what(exc)} (chained below)"
        ) from exc
    if not callable(factory):
        raise StorageConfigError(
            f"STORAGE_TYPE: the {entry.name.upper()} entry point ({entry.value}) is not callable"
        )
    plugin: BackendFactory = factory
    if inspect.iscoroutinefunction(plugin):
        # called, it would only make a coroutine: refuse it before making one
        raise StorageConfigError(_async(entry))

    def build(settings: StorageSettings) -> StorageBackend:
        try:
            backend = plugin(settings)
        except StorageError:
            raise  # typed already, in the backend's own words
        except Exception as exc:
            # a bad setting the plugin reads, or its signature: the same start-up error
            # as a bad STORAGE_* value, and as careful not to quote a value
            raise StorageConfigError(
                f"{_backend(entry)} failed to build: {_what(exc)} (chained below)"
            ) from exc
        if inspect.isawaitable(backend):
            if inspect.iscoroutine(backend):
                backend.close()  # never awaited: closed, so no RuntimeWarning when freed
            raise StorageConfigError(_async(entry))
        return backend

    return build


def _backend(entry: EntryPoint) -> str:
    return f"STORAGE_TYPE: the {entry.name.upper()} backend ({entry.value})"


def _async(entry: EntryPoint) -> str:
    return (
        f"{_backend(entry)} is async: a backend factory must be a plain function returning "
        "the backend (it does no I/O; the backend connects on first use)"
    )


def _what(exc: Exception) -> str:
    """The exception's type, and for a pydantic error the fields it names: never its
    message, which may quote the value (a URL with its password, a key)."""
    if not isinstance(exc, ValidationError):
        return type(exc).__name__
    fields = dict.fromkeys(
        ".".join(str(part) for part in error["loc"])
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    )
    named = ", ".join(field for field in fields if field) or "the model"
    return f"ValidationError ({exc.title}: invalid {named})"
