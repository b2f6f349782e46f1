"""STUB: replaced by the settings work."""

from pydantic_settings import BaseSettings


class StorageSettings(BaseSettings):
    pass
