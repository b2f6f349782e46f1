"""STUB: replaced by the path builder work."""


class StoragePathBuilder:
    pass
