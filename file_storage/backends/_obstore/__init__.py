"""What the backends on obstore's stores (GCS, Azure) share: :class:`ObstoreBackend`
(``_backend``), obstore's errors as :mod:`file_storage.errors` (``_errors``) and expiry
rules kept as one object in the store (``_rules``)."""
