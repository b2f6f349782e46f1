"""The conformance suite (the file_storage.testing plugin) on every backend of ours.

Exactly what a third party writes: this star import, and the ``backend`` fixture of
tests/conftest.py (ids memory, local, plugin, s3, s3_obstore, gcs, azure), with
``backend_lacks`` from tests/conformance/conftest.py.
"""

from file_storage.testing.suite import *  # noqa: F403
