"""STUB: replaced by the factory work."""

from file_storage.backends.base import StorageBackend


def create_storage_backend(settings: object = None) -> StorageBackend:
    raise NotImplementedError


def get_storage_backend() -> StorageBackend:
    raise NotImplementedError


async def close_storage_backend() -> None:
    raise NotImplementedError
