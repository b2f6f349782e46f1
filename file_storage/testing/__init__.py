"""The conformance suite as a pytest plugin: a backend proves itself by passing it.

pytest loads this plugin by itself wherever file_storage is installed (entry point
``pytest11``, named like the module, so that ``-p file_storage.testing`` or
``pytest_plugins = ["file_storage.testing"]`` find it loaded already; with plugin
autoloading off, they load it). On its own it only registers the ``backend_needs`` marker
and the ``backend_lacks`` fixture, and changes nothing in a project that does not use
them: the tests are collected only where a test module asks for them::

    # test_my_backend.py
    import pytest

    from file_storage.testing.suite import *  # noqa: F403
    from my_backend import MyStorageBackend


    @pytest.fixture
    def backend() -> MyStorageBackend:
        return MyStorageBackend()  # a fresh, empty backend for every test


    @pytest.fixture
    def backend_lacks() -> set[str]:
        return {"versions"}  # skips the tests needing these, with the reason

``FEATURES`` names what a test may need beyond the core contract, and what lacking it
means. A test marked ``backend_needs(feature, ...)`` is skipped, with that reason, on a
backend whose ``backend_lacks`` names the feature (features are declared, never probed:
a probe would turn a regression into a skip). The suite needs the ``testing`` extra:
``pip install 'file_storage[testing]'`` (pytest, pytest-asyncio, hypothesis).
"""

from __future__ import annotations

from collections.abc import Collection

import pytest

__all__ = ["FEATURES"]

#: every feature a conformance test may need, and what a backend lacking it does
FEATURES = {
    "copy_etags": (
        "takes the created event's ETag of a copy, move or restore from a stat after it "
        "(_copy returns None)"
    ),
    "conditional_writes": (
        "does not check overwrite=False and if_match on writes (PreconditionFailedError)"
    ),
    "exact_expiry": (
        "may delete an object rewritten while purge_expired checks it (no conditional delete)"
    ),
    "exact_moves": (
        "may delete a write landing on a move's source between its copy and its delete, "
        "or on migrate's source after its last look (no conditional delete)"
    ),
    "exact_version_purge": (
        "may delete a write of the key that lands while purge_versions(keep>=1) runs, when "
        'versioning was suspended meanwhile (it reuses the purged version id "null")'
    ),
    "folder_checks": (
        "does not refuse a key that is a folder or lies under an object (ObjectConflictError)"
    ),
    "object_headers": "does not store cache_control and content_disposition",
    "pinned_moves": (
        "may copy a write landing on a move's source after the move looked at it and "
        "before its copy read it (no conditional copy): the move then fails with the "
        "new bytes at both keys"
    ),
    "pinned_reads": "cannot pin a stream to the version an ETag names (stream(if_match=))",
    "suspended_versioning": "drops every version of a key written while versioning is suspended",
    "trailing_dot_keys": (
        "refuses a key with a segment ending in '.' (InvalidKeyError): the store drops "
        "such dots from a name"
    ),
    "underscore_metadata_names": "turns '_' into '-' in metadata names",
    "versions": "keeps no prior versions (set_versioning raises StorageConfigError)",
    "write_etags": (
        "takes a created event's ETag from a stat after the write (_save returns None)"
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backend_needs(*features): skip on a backend whose backend_lacks fixture names one "
        "of the features (file_storage.testing.FEATURES)",
    )


@pytest.fixture
def backend_lacks() -> Collection[str]:
    """The ``FEATURES`` the backend under test lacks: none. Override it to declare some."""
    return frozenset()


@pytest.fixture(autouse=True)
def _file_storage_backend_needs(request: pytest.FixtureRequest) -> None:
    """Skip a test marked ``backend_needs(...)`` on a backend lacking one of the features.

    Unmarked tests (every test of a project not running the suite) never reach
    ``backend_lacks``, so nothing else is required of them.
    """
    needs = [
        feature for mark in request.node.iter_markers("backend_needs") for feature in mark.args
    ]
    if not needs:
        return
    lacks: Collection[str] = request.getfixturevalue("backend_lacks")
    for feature in [*needs, *lacks]:
        if feature not in FEATURES:
            known = ", ".join(sorted(FEATURES))
            raise pytest.UsageError(f"unknown backend feature {feature!r} (known: {known})")
    for feature in needs:
        if feature in lacks:
            pytest.skip(f"the backend {FEATURES[feature]} (lacks {feature})")
