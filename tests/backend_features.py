"""What each backend of the conformance run lacks, declared, and why (docs/compatibility.md).

A conformance test that needs something not every backend has is marked
``backend_needs(feature, ...)``; on a backend that lacks it, the test is skipped with
the reason given here. Like the S3 server features of ``tests/s3util.py``, features are
declared, never probed: a probe would turn a regression into a skip. Backends not listed
(memory, local, s3, s3_obstore) have every feature.
"""

from __future__ import annotations

from collections.abc import Iterable

#: every feature a test may need, and what lacking it means
FEATURES = {
    "versions": "keeps no prior versions (set_versioning raises StorageConfigError)",
}

#: per backend id, the features it lacks (the reason is FEATURES' text)
LACKS: dict[str, frozenset[str]] = {
    # object_store has no API for GCS object generations or Azure blob versions
    "gcs": frozenset({"versions"}),
    "azure": frozenset({"versions"}),
    # the example third-party backend of docs/plugins.md keeps one version per key
    "plugin": frozenset({"versions"}),
}


def missing(backend_id: str, needed: Iterable[str]) -> str | None:
    """Why backend ``backend_id`` cannot run a test needing ``needed``; None when it can."""
    for feature in needed:
        if feature not in FEATURES:
            raise ValueError(f"unknown backend feature {feature!r}")
        if feature in LACKS.get(backend_id, frozenset()):
            return f"{backend_id} {FEATURES[feature]} (needs {feature})"
    return None
