"""Typed configuration read from ``STORAGE_*`` environment variables and a ``.env`` file.

Every field names its variable: ``StorageSettings.s3.max_concurrency`` is
``STORAGE_S3_MAX_CONCURRENCY``. The ``local``, ``s3``, ``gcs``, ``azure`` and ``quota``
sections are nested models, split from the variable name at the first ``_`` after the
prefix. An empty value counts as unset, except the S3, GCS and Azure prefixes (empty: the
root). Bad values raise
:class:`StorageConfigError` naming the variable, never echoing its value. Sizes are given
in GB (10^9 bytes) and MB (MiB, 2^20 bytes, as in AWS tooling) here only; the ``*_bytes``
properties convert them for the backends.
"""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from file_storage._cloud_settings import AzureSettings, GCSSettings
from file_storage._registry import backend_names
from file_storage._settings_common import (
    MAX_LEASE_SECONDS,
    MAX_NAMESPACE_CHARS,
    MAX_SECONDS,
    MIN_LEASE_SECONDS,
    S3_BUCKET,
    SECTION,
    BaseURL,
    Credential,
    Folder,
    HttpURL,
    StorePrefix,
    check_folder,
    check_s3_region,
    gb_to_bytes,
    namespace_is_own,
)
from file_storage._signing import signing_key_problem
from file_storage.errors import StorageConfigError

__all__ = [
    "AzureSettings",
    "ExpireSettings",
    "GCSSettings",
    "LocalSettings",
    "QuotaSettings",
    "S3Settings",
    "StorageSettings",
]

ENV_PREFIX = "STORAGE_"
MIB = 2**20  # multipart sizes are binary, like the AWS CLI and boto3's TransferConfig
# the variables whose empty value means something (the bucket root) instead of "unset"
_EMPTY_MEANS_EMPTY = frozenset({"storage_s3_prefix", "storage_gcs_prefix", "storage_azure_prefix"})
# S3 parts are 5 MiB..5 GiB, and one PUT takes at most 5 GiB (AWS, "Amazon S3 multipart
# upload limits"), so the threshold above which multipart is used must stay <= 5 GiB too.
MIN_PART_MB = 5
MAX_PART_MB = 5 * 1024


class LocalSettings(BaseModel):
    """``STORAGE_LOCAL_*``: the local disk backend."""

    model_config = SECTION

    path: Annotated[Path, AfterValidator(check_folder)] = Field(
        default=Path("./storage"),
        description="STORAGE_LOCAL_PATH: root folder of the local backend; key k is the file "
        "<path>/k",
    )
    max_size_gb: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_LOCAL_MAX_SIZE_GB: quota of the local backend in GB (10^9 bytes, "
        "fractional allowed); unset: no quota",
    )
    base_url: BaseURL = Field(
        default=None,
        description="STORAGE_LOCAL_BASE_URL: where the app mounts signed_url_router: an http(s):// "
        "URL or an absolute path such as /files; needs the signing key",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="STORAGE_LOCAL_SIGNING_KEY: secret HMAC key of signed local URLs, at least 32 "
        "characters; needs the base URL",
    )
    public_base_url: BaseURL = Field(
        default=None,
        description="STORAGE_LOCAL_PUBLIC_BASE_URL: where the files are served without a "
        "signature (a CDN, a public route such as /public), for get_public_url; also used by "
        "the MEMORY backend",
    )
    temp_max_age_seconds: float = Field(
        default=3600,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_LOCAL_TEMP_MAX_AGE_SECONDS: other processes' temp files older "
        "than this were left by a crash and are removed",
    )

    @field_validator("signing_key")
    @classmethod
    def _check_signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := signing_key_problem(value.get_secret_value())):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_signing_pair(self) -> Self:
        if (self.base_url is None) != (self.signing_key is None):
            raise ValueError(
                "STORAGE_LOCAL_BASE_URL and STORAGE_LOCAL_SIGNING_KEY: set both to sign "
                "local URLs, or neither"
            )
        return self

    @property
    def max_size_bytes(self) -> int | None:
        """The quota in bytes (``max_size_gb`` * 10^9), or ``None``."""
        return gb_to_bytes(self.max_size_gb)


class S3Settings(BaseModel):
    """``STORAGE_S3_*``: S3 and S3-compatible stores (MinIO, R2, ...)."""

    model_config = SECTION

    bucket: str | None = Field(
        default=None, description="STORAGE_S3_BUCKET: the bucket, which must exist; required for S3"
    )
    prefix: StorePrefix = Field(
        default="storage",
        description="STORAGE_S3_PREFIX: folder in the bucket holding every key (<prefix>/<key>); "
        "no leading or trailing /, at most 128 bytes; empty or '/': the bucket root",
    )
    region: str = Field(default="us-east-1", description="STORAGE_S3_REGION: region of the bucket")
    access_key_id: Credential = Field(
        default=None,
        description="STORAGE_S3_ACCESS_KEY_ID: set with the secret, or leave both unset for the "
        "standard AWS credential chain (environment, ~/.aws, instance role)",
    )
    secret_access_key: Credential = Field(
        default=None, description="STORAGE_S3_SECRET_ACCESS_KEY: the secret access key"
    )
    session_token: Credential = Field(
        default=None,
        description="STORAGE_S3_SESSION_TOKEN: session token of temporary credentials; needs the "
        "access key id and secret",
    )
    endpoint_url: HttpURL = Field(
        default=None,
        description="STORAGE_S3_ENDPOINT_URL: an S3-compatible server (MinIO, Ceph RGW, R2, ...), "
        "http(s):// without credentials; unset: AWS",
    )
    public_endpoint_url: HttpURL = Field(
        default=None,
        description="STORAGE_S3_PUBLIC_ENDPOINT_URL: the host browsers reach, put in presigned "
        "URLs when it differs from the endpoint (a server inside Docker, a proxy)",
    )
    public_base_url: BaseURL = Field(
        default=None,
        description="STORAGE_S3_PUBLIC_BASE_URL: the http(s) URL or absolute path (a route of "
        "the app that proxies the bucket) that serves the prefix without a signature (a CDN "
        "with origin path /<prefix>, a public bucket's <endpoint>/<bucket>/<prefix>), for "
        "get_public_url",
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto",
        description="STORAGE_S3_ADDRESSING_STYLE: path for MinIO-like servers, virtual for "
        "bucket host names, auto lets botocore pick",
    )
    max_size_gb: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_S3_MAX_SIZE_GB: quota under the prefix in GB (10^9 bytes, fractional "
        "allowed); unset: no quota",
    )
    multipart_threshold_mb: int = Field(
        default=16,
        ge=1,
        le=MAX_PART_MB,
        description="STORAGE_S3_MULTIPART_THRESHOLD_MB: files and streams at least this big (MiB) "
        "go as parallel multipart uploads",
    )
    multipart_chunk_mb: int = Field(
        default=8,
        ge=MIN_PART_MB,
        le=MAX_PART_MB,
        description="STORAGE_S3_MULTIPART_CHUNK_MB: part size in MiB, within S3's part limits",
    )
    max_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="STORAGE_S3_MAX_CONCURRENCY: parts in flight per transfer",
    )
    sse: Literal["AES256", "aws:kms"] | None = Field(
        default=None, description="STORAGE_S3_SSE: server-side encryption of every write"
    )
    sse_kms_key_id: str | None = Field(
        default=None,
        description="STORAGE_S3_SSE_KMS_KEY_ID: KMS key id, ARN or alias; only with "
        "STORAGE_S3_SSE=aws:kms",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="STORAGE_S3_MAX_ATTEMPTS: total attempts per request (botocore retries)",
    )
    checksum: Literal["auto", "crc32", "md5", "off"] = Field(
        default="auto",
        description="STORAGE_S3_CHECKSUM: integrity check of uploads: auto (CRC32 where the server "
        "keeps it, else Content-MD5), crc32, md5 or off",
    )
    retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard", description="STORAGE_S3_RETRY_MODE: botocore retry mode"
    )
    connect_timeout: float = Field(
        default=10.0,
        gt=0,
        lt=MAX_SECONDS,
        allow_inf_nan=False,
        description="STORAGE_S3_CONNECT_TIMEOUT: seconds to wait for a connection",
    )
    read_timeout: float = Field(
        default=60.0,
        gt=0,
        lt=MAX_SECONDS,
        allow_inf_nan=False,
        description="STORAGE_S3_READ_TIMEOUT: seconds to wait for data on an open connection",
    )
    max_pool_connections: int | None = Field(
        default=None,
        ge=1,
        description="STORAGE_S3_MAX_POOL_CONNECTIONS: HTTP connection pool size; unset: picked "
        "from the concurrency",
    )
    fallback_path: Folder = Field(
        default=None,
        description="STORAGE_S3_FALLBACK_PATH: a local spool folder keeping save/upload_file "
        "writes while S3 is unavailable, until flushed; unset: such writes fail",
    )
    flush_interval_seconds: float | None = Field(
        default=None,
        gt=0,
        lt=MAX_SECONDS,
        allow_inf_nan=False,
        description="STORAGE_S3_FLUSH_INTERVAL_SECONDS: upload the spool this often in the "
        "background; unset: only when flush_spool() is called",
    )
    client: Literal["aioboto3", "obstore"] = Field(
        default="aioboto3",
        description="STORAGE_S3_CLIENT: the S3 transport: aioboto3 (aiobotocore), or obstore "
        "(the Rust object_store client, extra file_storage[obstore]: less client CPU per "
        "request); what obstore cannot do still goes through aiobotocore",
    )

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str | None) -> str | None:
        # lenient (case, '_', length): buckets made before 2018 in us-east-1 and some
        # S3-compatible servers break today's AWS naming rules; S3 itself has the last word
        if value is not None and not S3_BUCKET.fullmatch(value):
            raise ValueError(
                "must be a bucket name: 2 to 255 letters, digits, '.', '-' or '_', "
                "starting with a letter or digit"
            )
        return value

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        return check_s3_region(value)

    @field_validator("addressing_style", "retry_mode", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("sse", mode="before")
    @classmethod
    def _normalize_sse(cls, value: object) -> object:
        if isinstance(value, str):
            return {"aes256": "AES256", "aws:kms": "aws:kms"}.get(value.lower(), value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "STORAGE_S3_ACCESS_KEY_ID and STORAGE_S3_SECRET_ACCESS_KEY: set both, or "
                "neither to use the standard AWS credential chain"
            )
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError(
                "STORAGE_S3_SESSION_TOKEN: needs STORAGE_S3_ACCESS_KEY_ID and "
                "STORAGE_S3_SECRET_ACCESS_KEY"
            )
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError("STORAGE_S3_SSE_KMS_KEY_ID: only used with STORAGE_S3_SSE=aws:kms")
        if self.flush_interval_seconds is not None and self.fallback_path is None:
            raise ValueError(
                "STORAGE_S3_FLUSH_INTERVAL_SECONDS: only used with STORAGE_S3_FALLBACK_PATH"
            )
        return self

    @property
    def max_size_bytes(self) -> int | None:
        """The quota in bytes (``max_size_gb`` * 10^9), or ``None``."""
        return gb_to_bytes(self.max_size_gb)

    @property
    def multipart_threshold_bytes(self) -> int:
        """Files at least this big are uploaded in parts (``multipart_threshold_mb`` * 2^20)."""
        return self.multipart_threshold_mb * MIB

    @property
    def multipart_chunk_bytes(self) -> int:
        """The size of each part (``multipart_chunk_mb`` * 2^20)."""
        return self.multipart_chunk_mb * MIB


class QuotaSettings(BaseModel):
    """``STORAGE_QUOTA_*``: quota bookkeeping shared by every backend."""

    model_config = SECTION

    refresh_seconds: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_QUOTA_REFRESH_SECONDS: re-scan quota usage at most this often, to see "
        "other processes' writes; unset: never",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="STORAGE_QUOTA_REDIS_URL: keep quotas in this Redis (redis://, rediss:// or "
        "unix://; extra file_storage[redis]), shared by every process using it; unset: each "
        "process keeps its own ledger",
    )
    redis_namespace: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAMESPACE_CHARS,
        description="STORAGE_QUOTA_REDIS_NAMESPACE: prefix of the ledger's Redis keys; unset: "
        "derived from the local root or the S3 endpoint, bucket and prefix",
    )
    lease_seconds: float = Field(
        default=60.0,
        ge=MIN_LEASE_SECONDS,
        le=MAX_LEASE_SECONDS,
        allow_inf_nan=False,
        description="STORAGE_QUOTA_LEASE_SECONDS: a write's reservation and key locks in Redis "
        "outlive a process that stopped renewing them (killed) by at most this long; 1 to "
        "86400 (renewed every third of it, a lease must outlast a Redis round trip and a "
        "stalled event loop)",
    )
    fail_open: bool = Field(
        default=False,
        description="STORAGE_QUOTA_FAIL_OPEN: with Redis unreachable, let writes through "
        "uncounted (one WARNING per outage) instead of failing them with "
        "StorageUnavailableError",
    )

    @field_validator("redis_namespace")
    @classmethod
    def _check_namespace(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():  # the ledger refuses it too
            raise ValueError("must not be blank")
        if value is not None and not namespace_is_own(value):
            raise ValueError("must neither start with '}' nor contain '}:'")
        return value


class ExpireSettings(BaseModel):
    """``STORAGE_EXPIRE_*``: lifecycle expiry applied by the backend (local, memory)."""

    model_config = SECTION

    interval_seconds: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="STORAGE_EXPIRE_INTERVAL_SECONDS: run purge_expired this often in the "
        "background while the backend is in use (local and memory; S3 expires objects "
        "itself); unset: only when the app calls it",
    )


class StorageSettings(BaseSettings):
    """Which backend to build and how, from ``STORAGE_*`` variables, a ``.env`` file or code.

    ``StorageSettings()`` reads the environment, then ``.env`` in the working directory
    (the environment wins). Keyword arguments win over both::

        StorageSettings(type="s3", s3={"bucket": "media"})

    Raises:
        StorageConfigError: a value is missing or invalid. The message names each
            variable (``STORAGE_S3_MAX_CONCURRENCY: must be <= 64``) and never its value.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        # empty values are dropped by settings_customise_sources, all but the S3 prefix
        env_ignore_empty=False,
        extra="ignore",
        hide_input_in_errors=True,
    )

    type: str = Field(
        default="LOCAL",
        description="STORAGE_TYPE: the backend, any case: LOCAL, S3, MEMORY, GCS, AZURE, or "
        "the name of an installed plugin (entry-point group file_storage.backends)",
    )
    local: LocalSettings = Field(default_factory=LocalSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    gcs: GCSSettings = Field(default_factory=GCSSettings)
    azure: AzureSettings = Field(default_factory=AzureSettings)
    quota: QuotaSettings = Field(default_factory=QuotaSettings)
    expire: ExpireSettings = Field(default_factory=ExpireSettings)

    # BaseSettings' own signature is **values: Any; overridden only to translate errors,
    # so that no caller ever sees a pydantic error (whose repr carries input values).
    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = _config_error(exc)
        except SettingsError as exc:
            error = _parse_error(exc)
        except UnicodeDecodeError:
            # its repr holds the file's whole content, every secret in it
            error = StorageConfigError(f"{_env_files(values)}: not valid UTF-8 text")
        except OSError as exc:
            error = StorageConfigError(f"{_env_files(values)}: cannot be read ({exc.strerror})")
        else:
            return
        # raised outside the except block, so not even __context__ keeps the pydantic
        # error: it holds the raw inputs, secrets included
        raise error

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: builtins.type[BaseSettings],  # "type" is a field here
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # An empty variable counts as unset (a shell or compose file that blanks it), but
        # STORAGE_S3_PREFIX= must reach the field: it selects the bucket root.
        for source in (env_settings, dotenv_settings):  # the .env source is an env source
            if isinstance(source, EnvSettingsSource):
                source.env_vars = {
                    name: value
                    for name, value in source.env_vars.items()
                    if value != "" or name.lower() in _EMPTY_MEANS_EMPTY
                }
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        # the registry reads installed packages' metadata only; nothing is imported here
        names = backend_names()
        if value not in names:
            raise ValueError(f"must be one of {', '.join(names) or '(none installed)'}")
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> Self:
        if self.type == "S3" and self.s3.bucket is None:
            raise ValueError("STORAGE_S3_BUCKET: required when STORAGE_TYPE is S3")
        if self.type == "GCS" and self.gcs.bucket is None:
            raise ValueError("STORAGE_GCS_BUCKET: required when STORAGE_TYPE is GCS")
        if self.type == "AZURE":
            if self.azure.container is None:
                raise ValueError("STORAGE_AZURE_CONTAINER: required when STORAGE_TYPE is AZURE")
            if self.azure.account is None and self.azure.connection_string is None:
                raise ValueError(
                    "STORAGE_AZURE_ACCOUNT: required when STORAGE_TYPE is AZURE (or set "
                    "STORAGE_AZURE_CONNECTION_STRING)"
                )
        return self


def _env_files(values: dict[str, Any]) -> str:
    """The env files a StorageSettings(...) call reads, by name, for a message."""
    files = values.get("_env_file", StorageSettings.model_config.get("env_file"))
    if isinstance(files, str | os.PathLike):
        files = [files]
    names = ", ".join(Path(file).name for file in files or ())
    return f"the env file {names}" if names else "the env file"


def _env_var(loc: tuple[int | str, ...]) -> str:
    if not loc:  # a check across sections
        return f"{ENV_PREFIX}*"
    return ENV_PREFIX + "_".join(str(part) for part in loc).upper()


def _describe(error: ErrorDetails) -> str:
    """Say what is wrong in words that never include the input value."""
    ctx: dict[str, Any] = error.get("ctx") or {}
    match error["type"]:
        case "value_error" | "assertion_error":
            return str(ctx.get("error", error["msg"]))
        case "less_than_equal":
            return f"must be <= {ctx['le']:g}"
        case "less_than":
            return f"must be < {ctx['lt']:g}"
        case "greater_than_equal":
            return f"must be >= {ctx['ge']:g}"
        case "greater_than":
            return f"must be > {ctx['gt']:g}"
        case "finite_number":
            return "must be a finite number"
        case "int_parsing" | "int_type" | "int_from_float":
            return "must be a whole number"
        case "float_parsing" | "float_type":
            return "must be a number"
        case "literal_error":
            return f"must be one of {ctx['expected']}"
        case "missing":
            return "is required"
        case _:
            # pydantic's own messages describe the expected shape, not the input
            return error["msg"]


def _config_error(exc: ValidationError) -> StorageConfigError:
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        detail = _describe(error)
        # model-level checks already name their variables
        problems.append(
            detail if detail.startswith(ENV_PREFIX) else f"{_env_var(error['loc'])}: {detail}"
        )
    return StorageConfigError("; ".join(problems))


def _parse_error(exc: SettingsError) -> StorageConfigError:
    # 'error parsing value for field "s3" from source "EnvSettingsSource"'
    match = re.search(r'field "(\w+)"', str(exc))
    name = _env_var((match.group(1),)) if match else "STORAGE_*"
    return StorageConfigError(f"{name}: cannot be parsed (a section takes a JSON object)")
