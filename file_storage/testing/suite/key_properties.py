"""Property: any string is either refused with InvalidKeyError or stored as exactly itself."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from file_storage import InvalidKeyError, StorageBackend

SEGMENTS = st.one_of(
    st.sampled_from(["", ".", "..", "...", "a", "\\", "..\\..", "~", " ", "%2e%2e", "\x00"]),
    st.text(min_size=0, max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
)
KEYS = st.one_of(
    st.text(max_size=40),
    st.lists(SEGMENTS, min_size=1, max_size=6).map("/".join),
    st.lists(SEGMENTS, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
)
CHECKS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@CHECKS
@given(key=KEYS)
async def test_any_key_is_refused_or_round_trips(backend: StorageBackend, key: str) -> None:
    try:
        stored = await backend.save(key, b"v")
    except InvalidKeyError:
        assert await backend.list_files() == []
        return
    try:
        assert stored == key
        assert await backend.list_files() == [key]
        assert await backend.load(key) == b"v"
    finally:
        await backend.delete_prefix("")
