"""One process of tests/backends/test_obstore_races.py: builds the GCS or Azure backend
from argv's JSON, says ``ready``, waits for a line on stdin (so that every process starts
together), writes each key once under its condition, and prints what each write got."""

from __future__ import annotations

import asyncio
import json
import sys

from file_storage import AzureStorageBackend, GCSStorageBackend, PreconditionFailedError


async def main() -> None:
    config, name, etags = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    kind = config.pop("kind")
    backend = GCSStorageBackend(**config) if kind == "gcs" else AzureStorageBackend(**config)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    got: dict[str, str] = {}
    for key, etag in etags.items():
        condition = {"overwrite": False} if etag is None else {"if_match": etag}
        try:
            await backend.save(key, name.encode() * 100, **condition)
        except PreconditionFailedError:
            got[key] = "refused"
        else:
            got[key] = "saved"
    await backend.aclose()
    print(json.dumps(got), flush=True)


asyncio.run(main())
