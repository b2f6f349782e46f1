"""An app whose storage fails as staged, for ``uvicorn tests.integration.staged_app:app``.

Keys under ``unavailable/`` fail like S3 after its retries (503), under ``denied/`` like
refused credentials (502), under ``broken/`` with an unexpected I/O error (500);
``ok.txt`` loads, everything else is missing.
"""

from __future__ import annotations

from fastapi import FastAPI

from file_storage import MemoryStorageBackend, StoragePermissionError, StorageUnavailableError
from file_storage.fastapi import StorageDep, get_storage, install_error_handlers


class StagedBackend(MemoryStorageBackend):
    async def _load(self, key: str) -> bytes:
        if key.startswith("unavailable/"):
            reset = ConnectionResetError(104, "Connection reset by peer")
            raise StorageUnavailableError(
                "S3 unavailable after 5 attempts (503 SlowDown)"
            ) from reset
        if key.startswith("denied/"):
            raise StoragePermissionError("access denied by S3 (AccessDenied, HTTP 403)")
        if key.startswith("broken/"):
            raise OSError(5, "Input/output error")
        if key == "ok.txt":
            return b"fine"
        return await super()._load(key)


backend = StagedBackend()

app = FastAPI()
install_error_handlers(app)
app.dependency_overrides[get_storage] = lambda: backend


@app.get("/objects/{key:path}")
async def load(key: str, storage: StorageDep) -> dict[str, str]:
    return {"text": (await storage.load(key)).decode()}
