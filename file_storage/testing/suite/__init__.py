"""The conformance suite: every test, and the fixtures they share, for one star import.

In a test module of yours, next to a ``backend`` fixture (in it or in a ``conftest.py``)::

    from file_storage.testing.suite import *  # noqa: F403

Every test takes ``backend`` (or a fixture built on it) and runs through the public
``StorageBackend`` API only. A module's ``pytestmark`` is applied to its own tests here
(a star import must not carry it to yours), and each async test gets the ``asyncio``
mark, so the suite runs in pytest-asyncio's strict mode as well as in auto mode.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from types import ModuleType

import pytest

# what runs the suite besides pytest: a clear hint instead of an ImportError deep inside
_MISSING = [name for name in ("pytest_asyncio", "hypothesis") if not importlib.util.find_spec(name)]
if _MISSING:
    raise ImportError(
        f"the conformance suite needs {', '.join(_MISSING)}: pip install 'file_storage[testing]'"
    )

from file_storage.testing.suite import fixtures  # noqa: E402 (after the check above)

# every public module of this package but the fixtures holds tests: found, not listed, so a
# new module cannot be left out (iter_modules yields them sorted by name)
MODULES: tuple[ModuleType, ...] = tuple(
    importlib.import_module(f"{__name__}.{info.name}")
    for info in pkgutil.iter_modules(__path__)
    if not info.name.startswith("_") and info.name != "fixtures"
)


def _is_async(test: object) -> bool:
    # hypothesis wraps an async test in a plain function and keeps the original
    inner = getattr(getattr(test, "hypothesis", None), "inner_test", test)
    return inspect.iscoroutinefunction(inner)


def _tests(module: ModuleType) -> dict[str, object]:
    marks = getattr(module, "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    found: dict[str, object] = {}
    for name, test in vars(module).items():
        if not (name.startswith("test_") and callable(test)):
            continue
        for mark in marks:
            test = mark(test)
        if _is_async(test):
            test = pytest.mark.asyncio(test)
        found[name] = test
    return found


def _collect() -> dict[str, object]:
    names: dict[str, object] = {name: getattr(fixtures, name) for name in fixtures.__all__}
    for module in MODULES:
        for name, test in _tests(module).items():
            if name in names:  # one would hide the other in the importing module
                raise RuntimeError(f"two conformance tests are named {name}")
            names[name] = test
    return names


_EXPORTS = _collect()
globals().update(_EXPORTS)
__all__ = sorted(_EXPORTS)  # every test, and the fixtures they share
