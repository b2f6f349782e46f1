"""get_presigned_url argument checks, the same on every backend."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend


@pytest.mark.parametrize("expires_in", [0, -1, 604_801, 10**9, 1.5, True])
async def test_expiry_out_of_bounds_raises_value_error(
    backend: StorageBackend, expires_in: int
) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        await backend.get_presigned_url("a.txt", expires_in=expires_in)


@pytest.mark.parametrize("method", ["DELETE", "get", "POST", ""])
async def test_unknown_method_raises_value_error(backend: StorageBackend, method: str) -> None:
    with pytest.raises(ValueError, match="method"):
        await backend.get_presigned_url("a.txt", method=method)  # type: ignore[arg-type]
