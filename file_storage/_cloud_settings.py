"""``STORAGE_GCS_*`` and ``STORAGE_AZURE_*``: the Google Cloud Storage and Azure Blob sections.

Re-exported by :mod:`file_storage.settings`, where they are fields of ``StorageSettings``.
"""

from __future__ import annotations

import re
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator

from file_storage._settings_common import (
    SECTION,
    BaseURL,
    HttpURL,
    Secret,
    StorePrefix,
    gb_to_bytes,
)

__all__ = ["AzureSettings", "GCSSettings"]

# GCS: 3-63 characters (222 with dots), lower-case letters, digits, '-', '_' and '.'
# (cloud.google.com/storage/docs/buckets#naming); the server has the last word
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Azure: accounts 3-24 lower-case letters and digits; containers 3-63 lower-case letters,
# digits and single '-' (learn.microsoft.com, "Naming and Referencing Containers")
_AZURE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_AZURE_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def check_gcs_bucket(value: str) -> str:
    if not _GCS_BUCKET.fullmatch(value):
        raise ValueError("must be a bucket name: lower-case letters, digits, '.', '-' or '_'")
    return value


def check_azure_account(value: str) -> str:
    if not _AZURE_ACCOUNT.fullmatch(value):
        raise ValueError("must be an account name: 3-24 lower-case letters and digits")
    return value


def check_azure_container(value: str) -> str:
    if not _AZURE_CONTAINER.fullmatch(value):
        raise ValueError("must be a container name: 3-63 lower-case letters, digits and '-'")
    return value


class GCSSettings(BaseModel):
    """``STORAGE_GCS_*``: Google Cloud Storage (extra ``file_storage[gcs]``)."""

    model_config = SECTION

    bucket: str | None = Field(
        default=None,
        description="STORAGE_GCS_BUCKET: the bucket, which must exist; required for GCS",
    )
    prefix: StorePrefix = Field(
        default="storage",
        description="STORAGE_GCS_PREFIX: folder in the bucket holding every key (<prefix>/<key>); "
        "no leading or trailing /, at most 128 bytes; empty or '/': the bucket root",
    )
    service_account: Secret = Field(
        default=None,
        description="STORAGE_GCS_SERVICE_ACCOUNT: a service-account key: the path of its JSON "
        "file, or the JSON itself; unset: Application Default Credentials",
    )
    endpoint_url: HttpURL = Field(
        default=None,
        description="STORAGE_GCS_ENDPOINT_URL: another GCS server (an emulator), http(s):// "
        "without credentials; unset: storage.googleapis.com",
    )
    public_base_url: BaseURL = Field(
        default=None,
        description="STORAGE_GCS_PUBLIC_BASE_URL: the http(s) URL or absolute path (a route "
        "of the app) that serves the prefix without a signature (a CDN, or "
        "https://storage.googleapis.com/<bucket>/<prefix> of a public bucket), for "
        "get_public_url; unset: get_public_url raises",
    )
    max_size_gb: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_GCS_MAX_SIZE_GB: quota under the prefix in GB (10^9 bytes, "
        "fractional allowed); unset: no quota",
    )

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str | None) -> str | None:
        return None if value is None else check_gcs_bucket(value)

    @property
    def max_size_bytes(self) -> int | None:
        """The quota in bytes (``max_size_gb`` * 10^9), or ``None``."""
        return gb_to_bytes(self.max_size_gb)


class AzureSettings(BaseModel):
    """``STORAGE_AZURE_*``: Azure Blob Storage (extra ``file_storage[azure]``)."""

    model_config = SECTION

    account: str | None = Field(
        default=None,
        description="STORAGE_AZURE_ACCOUNT: the storage account; required for AZURE unless the "
        "connection string names it",
    )
    container: str | None = Field(
        default=None,
        description="STORAGE_AZURE_CONTAINER: the container, which must exist; required for AZURE",
    )
    prefix: StorePrefix = Field(
        default="storage",
        description="STORAGE_AZURE_PREFIX: folder in the container holding every key "
        "(<prefix>/<key>); no leading or trailing /, at most 128 bytes; empty or '/': the "
        "container root",
    )
    access_key: Secret = Field(
        default=None,
        description="STORAGE_AZURE_ACCESS_KEY: the account's shared key (base64); or set the "
        "connection string; neither: the Azure credential chain (environment, managed identity)",
    )
    connection_string: Secret = Field(
        default=None,
        description="STORAGE_AZURE_CONNECTION_STRING: a connection string (AccountName=...;"
        "AccountKey=...;BlobEndpoint=...) instead of the account, key and endpoint",
    )
    endpoint_url: HttpURL = Field(
        default=None,
        description="STORAGE_AZURE_ENDPOINT_URL: the blob endpoint (an emulator: "
        "http://127.0.0.1:10000/devstoreaccount1), http(s):// without credentials; unset: "
        "https://<account>.blob.core.windows.net",
    )
    public_base_url: BaseURL = Field(
        default=None,
        description="STORAGE_AZURE_PUBLIC_BASE_URL: the http(s) URL or absolute path (a route "
        "of the app) that serves the prefix without a signature (a CDN, or "
        "https://<account>.blob.core.windows.net/<container>/<prefix> of a public container), "
        "for get_public_url; unset: get_public_url raises",
    )
    max_size_gb: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_AZURE_MAX_SIZE_GB: quota under the prefix in GB (10^9 bytes, "
        "fractional allowed); unset: no quota",
    )

    @field_validator("account")
    @classmethod
    def _check_account(cls, value: str | None) -> str | None:
        return None if value is None else check_azure_account(value)

    @field_validator("container")
    @classmethod
    def _check_container(cls, value: str | None) -> str | None:
        return None if value is None else check_azure_container(value)

    @model_validator(mode="after")
    def _check_credentials(self) -> Self:
        if self.access_key is not None and self.connection_string is not None:
            raise ValueError(
                "STORAGE_AZURE_ACCESS_KEY and STORAGE_AZURE_CONNECTION_STRING: set one, not both"
            )
        return self

    @property
    def max_size_bytes(self) -> int | None:
        """The quota in bytes (``max_size_gb`` * 10^9), or ``None``."""
        return gb_to_bytes(self.max_size_gb)
