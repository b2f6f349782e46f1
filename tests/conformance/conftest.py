"""Our backends through the suite's plugin: what each lacks, declared, and why.

The suite (file_storage.testing) skips a test marked ``backend_needs(feature)`` on a backend
whose ``backend_lacks`` names the feature. GCS, Azure and the example plugin keep no prior
versions (docs/compatibility.md); only memory and local check that a key is an object or a
folder (docs/concepts.md); the S3 runs lack what their server lacks (tests/s3util.py: moto,
or Ceph in ``make test-ceph``). Backends not listed have every feature.
"""

from __future__ import annotations

import pytest

from file_storage.testing import FEATURES
from tests.s3util import REASONS, SERVER

LACKS: dict[str, frozenset[str]] = {
    # object_store has no API for GCS object generations or Azure blob versions; object
    # stores do not check the object-or-folder rule (a request per folder level per
    # write); object_store's copy answers no ETag. Their purge deletes conditionally (a
    # signed request with the fixtures' keys: exact_expiry)
    "gcs": frozenset({"versions", "folder_checks", "copy_etags"}),
    # Azure drops a trailing dot from a blob name: the backend refuses such keys
    "azure": frozenset({"versions", "folder_checks", "copy_etags", "trailing_dot_keys"}),
    # the example third-party backend of docs/plugins.md keeps one version per key, does
    # not check the object-or-folder rule, and keeps the default (stat, then delete)
    # purge and move (copy, then delete)
    "plugin": frozenset(
        {"versions", "folder_checks", "exact_expiry", "exact_moves", "pinned_moves", "write_etags"}
    ),
    # the suite's features that are the S3 server's, and this server lacks
    # S3 has no conditional DeleteObjects of a version: a suspended write landing while
    # purge_versions runs replaces the "null" version it deletes; the purge asks for it
    # again just before, which leaves one round trip (docs/versioning.md)
    "s3": frozenset(f for f in FEATURES if f in REASONS and f not in SERVER.features)
    | {"folder_checks", "exact_version_purge"}
    # a server ignoring If-Match on DeleteObject (Ceph 16) gets plain deletes
    | (frozenset() if "if_match_on_delete" in SERVER.features else {"exact_moves"}),
}
# obstore's copy answers no ETag (the transport's fast path for a CopyObject)
LACKS["s3_obstore"] = LACKS["s3"] | {"copy_etags"}


@pytest.fixture
def backend_lacks(request: pytest.FixtureRequest) -> frozenset[str]:
    callspec = getattr(request.node, "callspec", None)
    backend_id = None if callspec is None else callspec.params.get("backend")
    return LACKS.get(str(backend_id), frozenset())
