"""Azurite (from npm, scripts/ensure-azurite) on 127.0.0.1, for the Azure conformance run.

Started with telemetry off and in-memory persistence; containers are made with a request
signed by the emulator's well-known development key (Shared Key authorization).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from file_storage import AzureStorageBackend
from file_storage.backends.azure import EMULATOR_ACCOUNT, EMULATOR_KEY
from tests.gcs_emulator import LoggedServer, free_port

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "azurite-blob"
_VERSION = "2021-08-06"


class Azurite(LoggedServer):
    def __init__(self) -> None:
        if not AZURITE.exists():
            subprocess.run([str(ROOT / "scripts" / "ensure-azurite")], check=True)
            if not AZURITE.exists():  # the script said why on stderr
                pytest.skip("Azurite is not installed: scripts/ensure-azurite needs npm")
        port = free_port()
        argv = [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",  # it would send usage data to Azure otherwise
        ]
        super().__init__("azurite", argv, "successfully listens")
        self.netloc = f"127.0.0.1:{port}"
        self.endpoint = f"http://{self.netloc}/{EMULATOR_ACCOUNT}"

    def request(self, method: str, path: str, query: dict[str, str]) -> int:
        """A body-less request to ``/<account><path>``, signed with the development key."""
        date = formatdate(usegmt=True)
        canonical_query = "".join(f"\n{name}:{query[name]}" for name in sorted(query))
        to_sign = (
            f"{method}\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:{_VERSION}\n"
            f"/{EMULATOR_ACCOUNT}/{EMULATOR_ACCOUNT}{path}{canonical_query}"
        )
        key = base64.b64decode(EMULATOR_KEY)
        signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest())
        target = f"/{EMULATOR_ACCOUNT}{path}?" + "&".join(f"{k}={v}" for k, v in query.items())
        # Azurite can be slow on 2 loaded cores: a container create next to a Ceph test run
        # took over 30 s once (after a 64 MiB test); a fixture's wait, not a test's verdict
        conn = http.client.HTTPConnection(self.netloc, timeout=120)
        try:
            conn.request(
                method,
                target,
                headers={
                    "x-ms-date": date,
                    "x-ms-version": _VERSION,
                    "Authorization": f"SharedKey {EMULATOR_ACCOUNT}:{signature.decode()}",
                    "Content-Length": "0",
                },
            )
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def create_container(self, name: str) -> None:
        status = self.request("PUT", f"/{name}", {"restype": "container"})
        if status != 201:
            raise RuntimeError(f"creating container {name}: {status}")

    def delete_container(self, name: str) -> None:
        self.request("DELETE", f"/{name}", {"restype": "container"})


@asynccontextmanager
async def fresh_container_backend(
    azurite: Azurite, endpoint_url: str | None = None, **options: Any
) -> AsyncIterator[AzureStorageBackend]:
    """An Azure backend (prefix ``storage``) on a fresh container of ``azurite``, reached at
    ``endpoint_url`` (a fault proxy in front of it; default: Azurite itself), removed after."""
    container = f"test-{uuid.uuid4().hex[:20]}"
    azurite.create_container(container)
    backend = AzureStorageBackend(
        container,
        account=EMULATOR_ACCOUNT,
        prefix="storage",
        access_key=EMULATOR_KEY,
        endpoint_url=endpoint_url or azurite.endpoint,
        **options,
    )
    try:
        yield backend
    finally:
        await backend.aclose()
        azurite.delete_container(container)  # Azurite keeps everything in memory
