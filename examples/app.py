"""The example service: uploads, paged listing, ranged downloads, and browser uploads
straight to storage by presigned PUT or by a size-capped form POST.

Run it with ``make run`` (``uvicorn examples.app:app --host 127.0.0.1 --port 8000``) and
open http://127.0.0.1:8000. It stores in ``./storage`` unless ``STORAGE_*`` says otherwise,
and runs unchanged on S3 (``STORAGE_TYPE=S3``, see docs/fastapi.md).

Environment, besides ``STORAGE_*``:

- ``EXAMPLE_MAX_UPLOAD_BYTES``: the largest upload through ``POST /api/files`` or a form
  from ``POST /api/presign-post`` (100 MiB).
- ``EXAMPLE_SET_BUCKET_CORS=1``: on S3, add the CORS rule browsers need for presigned PUTs
  to the bucket at start-up, for the origins in ``EXAMPLE_CORS_ORIGINS`` (comma-separated,
  ``http://127.0.0.1:8000,http://localhost:8000`` by default).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from file_storage import StoragePathBuilder, StorageSettings
from file_storage.fastapi import (
    StorageDep,
    install_error_handlers,
    save_upload,
    signed_url_router,
    storage_lifespan,
    storage_response,
)

logger = logging.getLogger("examples.app")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/files"
DEFAULT_CORS_ORIGINS = "http://127.0.0.1:8000,http://localhost:8000"
UPLOADS = "uploads"  # every key this service creates or serves is under this folder
PRESIGN_SECONDS = 900
INDEX_HTML = Path(__file__).parent / "static" / "index.html"

paths = StoragePathBuilder()


def apply_dev_defaults() -> StorageSettings:
    """On the local backend with no signed-URL settings, use a dev base URL and a fresh key.

    A key generated here lives as long as the process: URLs it signed stop working on
    restart, and several workers would each have their own. Configure
    ``STORAGE_LOCAL_SIGNING_KEY`` for anything but a single dev process.
    """
    settings = StorageSettings()  # raises StorageConfigError naming a bad variable
    if settings.type != "LOCAL" or settings.local.base_url is not None:
        return settings
    os.environ["STORAGE_LOCAL_BASE_URL"] = DEFAULT_BASE_URL
    os.environ["STORAGE_LOCAL_SIGNING_KEY"] = secrets.token_urlsafe(48)
    logger.warning(
        "STORAGE_LOCAL_SIGNING_KEY is not set: generated one for this process only "
        "(signed URLs die with it); serving signed URLs at %s",
        DEFAULT_BASE_URL,
    )
    return StorageSettings()


def signed_url_prefix(settings: StorageSettings) -> str:
    """The path the signed-URL router is mounted at: the path of STORAGE_LOCAL_BASE_URL."""
    base_url = settings.local.base_url or DEFAULT_BASE_URL
    return urlsplit(base_url).path.rstrip("/") or "/files"


async def add_bucket_cors(settings: StorageSettings, origins: list[str]) -> None:
    """Add a CORS rule letting ``origins`` GET, PUT and POST objects with presigned URLs.

    Rules already on the bucket are kept; the rule is added once. Uses plain aioboto3
    with the same settings as the backend (this is bucket administration, not storage).
    """
    import aioboto3  # only for this one-off call; file_storage imports it lazily too

    s3 = settings.s3
    rule = {
        "AllowedOrigins": origins,
        "AllowedMethods": ["GET", "HEAD", "PUT", "POST"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 3000,
    }
    secret = s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
    session = aioboto3.Session(
        aws_access_key_id=s3.access_key_id.get_secret_value() if s3.access_key_id else None,
        aws_secret_access_key=secret,
        aws_session_token=s3.session_token.get_secret_value() if s3.session_token else None,
        region_name=s3.region,
    )
    async with session.client("s3", endpoint_url=s3.endpoint_url) as client:
        try:
            current = await client.get_bucket_cors(Bucket=s3.bucket)
            rules: list[dict[str, Any]] = current.get("CORSRules", [])
        except client.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchCORSConfiguration":
                raise
            rules = []
        if any(_cors_meaning(existing) == _cors_meaning(rule) for existing in rules):
            return
        await client.put_bucket_cors(
            Bucket=s3.bucket, CORSConfiguration={"CORSRules": [*rules, rule]}
        )
    logger.info("added a CORS rule for %s to bucket %s", ", ".join(origins), s3.bucket)


def _cors_meaning(rule: dict[str, Any]) -> tuple[frozenset[str], ...]:
    """What a CORS rule allows: origins, methods and headers, whatever their order or case,
    and leaving out what servers add or drop (Ceph RGW returns the methods reordered)."""
    return (
        frozenset(rule.get("AllowedOrigins") or ()),
        frozenset(method.upper() for method in rule.get("AllowedMethods") or ()),
        frozenset(header.lower() for header in rule.get("AllowedHeaders") or ()),
    )


class PresignRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=1024)


class PresignedUpload(BaseModel):
    key: str
    url: str
    method: str = "PUT"
    expires_in: int


class PresignedForm(BaseModel):
    key: str
    url: str
    fields: dict[str, str]
    max_bytes: int


class StoredFile(BaseModel):
    key: str
    size: int
    last_modified: str
    url: str


class FilePage(BaseModel):
    files: list[StoredFile]
    next_start_after: str | None


def _own_key(key: str) -> str:
    """Serve and delete only what this service created (keys under ``uploads/``)."""
    if not key.startswith(UPLOADS + "/"):
        raise HTTPException(404, "not found")
    return key


def create_app() -> FastAPI:
    """Build the example service from the environment."""
    settings = apply_dev_defaults()
    max_upload = int(os.environ.get("EXAMPLE_MAX_UPLOAD_BYTES", str(100 * 2**20)))
    set_cors = os.environ.get("EXAMPLE_SET_BUCKET_CORS") == "1"
    origins = os.environ.get("EXAMPLE_CORS_ORIGINS", DEFAULT_CORS_ORIGINS).split(",")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with storage_lifespan(app):
            if set_cors and settings.type == "S3":
                await add_bucket_cors(settings, [o.strip() for o in origins if o.strip()])
            yield

    app = FastAPI(title="file_storage example", lifespan=lifespan)
    install_error_handlers(app)
    # GET/PUT for the local backend's presigned URLs; with S3 they point at S3 instead
    app.include_router(signed_url_router, prefix=signed_url_prefix(settings))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_HTML, media_type="text/html")

    @app.get("/api/files")
    async def list_files(
        storage: StorageDep,
        start_after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> FilePage:
        # the cursor is a key: a bad one is an InvalidKeyError, answered 400
        page = await storage.list_page(UPLOADS, limit=limit, start_after=start_after or None)
        files = [
            StoredFile(
                key=info.key,
                size=info.size,
                last_modified=info.last_modified.isoformat(),
                url="/api/files/" + quote(info.key),
            )
            for info in page.files
        ]
        return FilePage(files=files, next_start_after=page.next_start_after)

    @app.post("/api/files", status_code=201)
    async def upload(file: UploadFile, storage: StorageDep) -> dict[str, str]:
        key = paths.unique(UPLOADS, file.filename or "upload")
        await save_upload(storage, key, file, max_bytes=max_upload)
        return {"key": key}

    @app.api_route("/api/files/{key:path}", methods=["GET", "HEAD"])
    async def download(key: str, request: Request, storage: StorageDep) -> Response:
        return await storage_response(
            storage, _own_key(key), request, filename=key.rsplit("/", 1)[-1]
        )

    @app.delete("/api/files/{key:path}", status_code=204)
    async def delete(key: str, storage: StorageDep) -> None:
        await storage.delete(_own_key(key))

    @app.post("/api/presign")
    async def presign(body: PresignRequest, storage: StorageDep) -> PresignedUpload:
        key = paths.unique(UPLOADS, body.filename)
        url = await storage.get_presigned_url(key, expires_in=PRESIGN_SECONDS, method="PUT")
        return PresignedUpload(key=key, url=url, expires_in=PRESIGN_SECONDS)

    @app.post("/api/presign-post")
    async def presign_post(body: PresignRequest, storage: StorageDep) -> PresignedForm:
        """A form upload capped at EXAMPLE_MAX_UPLOAD_BYTES (and the quota left): the
        store refuses a larger file, whatever the browser claims."""
        key = paths.unique(UPLOADS, body.filename)
        post = await storage.get_presigned_post(
            key, expires_in=PRESIGN_SECONDS, max_bytes=max_upload
        )
        return PresignedForm(key=key, url=post.url, fields=post.fields, max_bytes=max_upload)

    return app


app = create_app()
