"""The example service: a small file-sharing app on file_storage, on any backend.

Each user has a folder (``users/<user>``, from ``StoragePathBuilder``) with a quota and a
meter; files go straight from the browser to storage with a progress bar (a presigned
PUT, or a size-capped form POST) or through the app; the list is paged; each file keeps
the name it was uploaded with and downloads under it (a presigned GET with
``filename=``); delete removes it.

There is no real sign-in: the user is whoever the request says it is (the ``X-User``
header, else the ``user`` cookie the page's user picker sets, else ``demo``). Put your
own authentication in :func:`current_user`; everything else stays as it is: every key
is built under the user's folder and every key a request names is checked to be there.

The original file name is kept in the object's ``Content-Disposition`` header
(``attachment; filename*=UTF-8''...``, any Unicode): an upload through the app stores it
with the bytes; a presigned PUT or form POST cannot carry it the same way on every
backend, so after the upload the page calls ``POST /api/finish``, which writes it onto
the object in place (``copy(key, key, content_disposition=...)``, server-side on S3).
``stat`` returns it; listings show it; downloads are named by it.

Run it with ``make run`` (``uvicorn examples.app:app --host 127.0.0.1 --port 8000``) and
open http://127.0.0.1:8000. It stores in ``./storage`` unless ``STORAGE_*`` says otherwise,
and runs unchanged on S3 (``STORAGE_TYPE=S3``) and in memory (``STORAGE_TYPE=MEMORY``), see
docs/fastapi.md.

Environment, besides ``STORAGE_*``:

- ``EXAMPLE_MAX_UPLOAD_BYTES``: the largest single upload (100 MiB).
- ``EXAMPLE_USER_QUOTA_BYTES``: what each user may store (1 GB; ``0``: no per-user quota).
  An upload is capped at ``min(EXAMPLE_MAX_UPLOAD_BYTES, what the user has left)``.
- ``EXAMPLE_SET_BUCKET_CORS=1``: on S3, add the CORS rule browsers need for presigned PUTs
  and form POSTs to the bucket at start-up, for the origins in ``EXAMPLE_CORS_ORIGINS``
  (comma-separated, ``http://127.0.0.1:8000,http://localhost:8000`` by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from file_storage import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    StorageBackend,
    StorageConfigError,
    StoragePathBuilder,
    StorageSettings,
)
from file_storage.fastapi import (
    StorageDep,
    content_disposition,
    install_error_handlers,
    make_signed_url_router,
    save_upload,
    storage_lifespan,
    storage_response,
)

logger = logging.getLogger("examples.app")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/files"
DEFAULT_CORS_ORIGINS = "http://127.0.0.1:8000,http://localhost:8000"
DEFAULT_USER = "demo"
PRESIGN_SECONDS = 900
INDEX_HTML = Path(__file__).parent / "static" / "index.html"

paths = StoragePathBuilder()


def apply_dev_defaults() -> StorageSettings:
    """On the local or memory backend with no signed-URL settings, use a dev base URL and
    a fresh key.

    A key generated here lives as long as the process: URLs it signed stop working on
    restart, and several workers would each have their own. Configure
    ``STORAGE_LOCAL_SIGNING_KEY`` for anything but a single dev process.
    """
    settings = StorageSettings()  # raises StorageConfigError naming a bad variable
    if settings.type not in ("LOCAL", "MEMORY") or settings.local.base_url is not None:
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
        "ExposeHeaders": ["ETag", "Content-Disposition"],
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


# ----------------------------------------------------------------------------- users


def current_user(request: Request) -> str:
    """The user's folder, ``users/<user>``: the stand-in for real authentication.

    The slug is checked, never rewritten (``StoragePathBuilder.user_root``): ``../bob``
    or ``a/b`` is a 400, so no one can name a folder that is not theirs.
    """
    user = request.headers.get("x-user") or request.cookies.get("user") or DEFAULT_USER
    return paths.user_root(user)  # InvalidKeyError (400) for a bad slug


UserRoot = Annotated[str, Depends(current_user)]


def own_key(root: str, key: str) -> str:
    """``key`` when it is in the user's folder; else 404, as if it did not exist.

    A prefix check is enough: the backend refuses ``.``/``..`` segments and ``a//b``
    (400) before any I/O, so ``users/me/../you/x`` never reaches another folder.
    """
    if not key.startswith(root + "/"):
        raise HTTPException(404, "not found")
    return key


def original_name(info: ObjectInfo) -> str:
    """The name the file was uploaded with (its ``Content-Disposition``), else the key's."""
    for part in (info.content_disposition or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "filename*" and value.lower().startswith("utf-8''"):
            text = unquote(value[len("utf-8''") :], errors="replace")
            # another tool may have stored anything: no control characters in a name
            text = "".join(ch for ch in text if ch.isprintable()).strip()
            if text:
                return text
    return info.key.rsplit("/", 1)[-1]


# ----------------------------------------------------------------------------- API models


class UploadRequest(BaseModel):
    filename: str = Field(min_length=1, max_length=1024)
    size: int | None = Field(default=None, ge=0)  # what the browser says the file weighs


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


class FinishRequest(BaseModel):
    key: str = Field(min_length=1, max_length=1024)
    filename: str = Field(min_length=1, max_length=1024)


class StoredFile(BaseModel):
    key: str
    name: str
    size: int
    last_modified: str
    url: str  # through the app (Range, ETag)
    download_url: str  # presigned GET, straight from storage, named ``name``


class FilePage(BaseModel):
    files: list[StoredFile]
    next_start_after: str | None


class QuotaUsage(BaseModel):
    user: str
    used: int
    limit: int | None
    max_upload: int  # the largest upload accepted now: min(max upload, quota left)


# ----------------------------------------------------------------------------- the app


def create_app() -> FastAPI:
    """Build the example service from the environment."""
    settings = apply_dev_defaults()
    max_upload = int(os.environ.get("EXAMPLE_MAX_UPLOAD_BYTES", str(100 * 2**20)))
    user_quota = int(os.environ.get("EXAMPLE_USER_QUOTA_BYTES", str(10**9))) or None
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

    async def storage_for_signed_urls(request: Request, storage: StorageDep) -> StorageBackend:
        """The backend, with the quota of the user folder a signed URL's key lies in.

        Quotas are set per process, when a user's request comes in: a URL handed out by
        another worker, or before a restart, reaches a process that may not have set
        that user's quota yet, and would store past it.
        """
        key: str = request.path_params.get("key", "")
        top, _, in_top = key.partition("/")
        user, _, name = in_top.partition("/")
        if top == "users" and name:
            with contextlib.suppress(InvalidKeyError):  # no user's folder: nothing to cap
                storage.set_quota(paths.user_root(user), user_quota)
        return storage

    # GET/PUT/POST for the local and memory backends' presigned URLs and forms; with S3
    # they point at S3 instead
    app.include_router(
        make_signed_url_router(get_backend=storage_for_signed_urls),
        prefix=signed_url_prefix(settings),
    )

    async def usage_of(storage: StorageBackend, root: str) -> QuotaUsage:
        # set on each request: cheap, and a user seen for the first time gets one too
        storage.set_quota(root, user_quota)
        usage = await storage.get_usage(root)
        left = max_upload if usage.limit is None else usage.limit - usage.used
        return QuotaUsage(
            user=root.rsplit("/", 1)[-1],
            used=usage.used,
            limit=usage.limit,
            max_upload=max(0, min(max_upload, left)),
        )

    async def describe(storage: StorageBackend, info: ObjectInfo) -> StoredFile | None:
        try:
            # a listing does not carry headers on S3: stat does
            info = await storage.stat(info.key)
        except ObjectNotFoundError:  # deleted since it was listed
            return None
        name = original_name(info)
        download_url = await storage.get_presigned_url(
            info.key, expires_in=PRESIGN_SECONDS, filename=name
        )
        return StoredFile(
            key=info.key,
            name=name,
            size=info.size,
            last_modified=info.last_modified.isoformat(),
            url="/api/files/" + quote(info.key),
            download_url=download_url,
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_HTML, media_type="text/html")

    @app.get("/api/usage")
    async def usage(root: UserRoot, storage: StorageDep) -> QuotaUsage:
        """The user's quota meter: bytes stored in their folder, and the limit."""
        return await usage_of(storage, root)

    @app.get("/api/files")
    async def list_files(
        root: UserRoot,
        storage: StorageDep,
        start_after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> FilePage:
        """One page of the user's files; the cursor is the last key of the previous page."""
        # a bad cursor is an InvalidKeyError (400); one outside the folder lists nothing
        page = await storage.list_page(root, limit=limit, start_after=start_after or None)
        described = await asyncio.gather(*(describe(storage, info) for info in page.files))
        files = [file for file in described if file is not None]
        return FilePage(files=files, next_start_after=page.next_start_after)

    @app.post("/api/files", status_code=201)
    async def upload(root: UserRoot, file: UploadFile, storage: StorageDep) -> dict[str, str]:
        """Upload through the app, into the user's folder, keeping the file's name."""
        name = file.filename or "upload"
        cap = (await usage_of(storage, root)).max_upload  # the quota is enforced anyway
        key = paths.unique(root, name)
        await save_upload(
            storage, key, file, max_bytes=cap, content_disposition=content_disposition(name)
        )
        return {"key": key}

    @app.api_route("/api/files/{key:path}", methods=["GET", "HEAD"])
    async def download(root: UserRoot, key: str, request: Request, storage: StorageDep) -> Response:
        """Download through the app (Range, ETag), named as uploaded."""
        info = await storage.stat(own_key(root, key))
        return await storage_response(storage, key, request, filename=original_name(info))

    @app.delete("/api/files/{key:path}", status_code=204)
    async def delete(root: UserRoot, key: str, storage: StorageDep) -> None:
        await storage.delete(own_key(root, key))

    @app.post("/api/presign")
    async def presign(root: UserRoot, body: UploadRequest, storage: StorageDep) -> PresignedUpload:
        """A presigned PUT for a new key in the user's folder.

        The signed-URL route of the local and memory backends counts the upload in the
        user's quota. A PUT straight to S3, GCS or Azure takes any size, so under a quota
        the library refuses to sign one: the answer is then 409 and the page sends the
        capped form (``POST /api/presign-post``) instead. The size the browser declares
        is checked here too, to refuse early.
        """
        cap = (await usage_of(storage, root)).max_upload
        if body.size is not None and body.size > cap:
            raise HTTPException(413, f"the file is larger than the {cap} bytes you may upload")
        key = paths.unique(root, body.filename)
        try:
            url = await storage.get_presigned_url(key, expires_in=PRESIGN_SECONDS, method="PUT")
        except StorageConfigError as exc:
            raise HTTPException(409, exc.detail) from exc
        return PresignedUpload(key=key, url=url, expires_in=PRESIGN_SECONDS)

    @app.post("/api/presign-post")
    async def presign_post(
        root: UserRoot, body: UploadRequest, storage: StorageDep
    ) -> PresignedForm:
        """A form upload capped at min(EXAMPLE_MAX_UPLOAD_BYTES, the user's quota left):
        the store refuses a larger file, whatever the browser claims."""
        cap = (await usage_of(storage, root)).max_upload
        key = paths.unique(root, body.filename)
        # the library caps it at the quota left too (the user's folder has a quota)
        post = await storage.get_presigned_post(key, expires_in=PRESIGN_SECONDS, max_bytes=cap)
        return PresignedForm(key=key, url=post.url, fields=post.fields, max_bytes=cap)

    @app.post("/api/finish")
    async def finish(root: UserRoot, body: FinishRequest, storage: StorageDep) -> StoredFile:
        """After a presigned upload: keep the file's name, and count it in the quota.

        The name goes into the object's Content-Disposition, in place (server-side on
        S3). The bytes went around the app, so the user's usage is counted afresh; an
        upload that brought more than the quota left (a PUT signed before the user had
        a quota) is deleted (413).
        """
        key = own_key(root, body.key)
        # count first: the rewrite below is then an overwrite of a known size (free)
        await storage.refresh_usage(root)
        usage = await storage.get_usage(root)
        if usage.limit is not None and usage.used > usage.limit:
            await storage.delete(key)
            raise HTTPException(413, "the file is larger than your quota allows: deleted")
        await storage.copy(key, key, content_disposition=content_disposition(body.filename))
        described = await describe(storage, await storage.stat(key))
        if described is None:
            raise HTTPException(404, "not found")
        return described

    return app


app = create_app()
