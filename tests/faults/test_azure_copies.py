"""Azure's Copy Blob may answer "pending" and go on copying after its answer (a large
blob, another account): Azurite always copies before it answers, so the fault proxy
gives the answers Azure would. A copy is trusted, and a move's source deleted, only once
the destination says the copy is complete."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from file_storage import (
    AzureStorageBackend,
    PreconditionFailedError,
    StorageUnavailableError,
)
from file_storage.backends._obstore import _conditional
from file_storage.backends._obstore._backend import ObstoreBackend
from file_storage.backends.azure import EMULATOR_ACCOUNT, _copies
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.azure


@pytest.fixture
def backend(azure_behind_proxy: AzureStorageBackend) -> AzureStorageBackend:
    return azure_behind_proxy


def line(backend: AzureStorageBackend, method: str, key: str) -> str:
    """The start of the request line of ``method`` on ``key``'s blob."""
    return f"{method} /{EMULATOR_ACCOUNT}/{backend._container}/{backend._name(key)}"


def pending_copy(proxy: FaultProxy, backend: AzureStorageBackend, looks: int, then: str) -> None:
    """The copy to dst.bin answers "pending", and so do ``looks`` looks at it; the next
    look answers ``then`` (``""``: what Azurite says, success)."""
    proxy.rewrite_header("x-ms-copy-status", "pending", match=line(backend, "PUT", "dst.bin"))
    head = line(backend, "HEAD", "dst.bin")
    if looks:
        proxy.rewrite_header("x-ms-copy-status", "pending", times=looks, match=head)
    if then:
        proxy.rewrite_header("x-ms-copy-status", then, match=head)


@pytest.mark.parametrize("operation", ["move", "copy"])
async def test_a_pending_copy_is_awaited_before_it_is_trusted(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, operation: str
) -> None:
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=2, then="")
    await getattr(backend, operation)("src.bin", "dst.bin")
    requests = azure_proxy.requests
    looks = [
        i
        for i, request in enumerate(requests)
        if request.startswith(line(backend, "HEAD", "dst.bin"))
    ]
    assert len(looks) == 3  # two pending, then success
    if operation == "move":
        # the source is deleted only after the copy was seen complete
        delete = next(
            i for i, r in enumerate(requests) if r.startswith(line(backend, "DELETE", "src.bin"))
        )
        assert delete > looks[-1]
        assert await backend.list_files() == ["dst.bin"]
    else:
        assert await backend.list_files() == ["dst.bin", "src.bin"]
    assert await backend.load("dst.bin") == b"s" * 300
    assert (await backend.get_usage()).used == 300 * (1 if operation == "move" else 2)


@pytest.mark.parametrize("ended", ["failed", "aborted"])
async def test_a_pending_copy_that_fails_fails_the_move_and_keeps_the_source(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, ended: str
) -> None:
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=1, then=ended)
    with pytest.raises(StorageUnavailableError, match=f"copy ended {ended}") as info:
        await backend.move("src.bin", "dst.bin")
    assert (info.value.operation, info.value.key) == ("move", "src.bin")
    assert azure_proxy.count(line(backend, "DELETE", "src.bin")) == 0
    assert await backend.load("src.bin") == b"s" * 300
    # the quota counts what the destination holds (here Azurite's whole copy)
    stored = sum([(await backend.stat(key)).size for key in await backend.list_files()])
    assert (await backend.get_usage()).used == stored


async def test_a_copy_still_pending_after_the_wait_is_aborted_and_the_source_kept(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_copies, "COPY_WAIT", 0.3)  # a few looks (0.05, 0.1, 0.2 s apart)
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=50, then="")
    with pytest.raises(StorageUnavailableError, match="still pending"):
        await backend.move("src.bin", "dst.bin")
    assert azure_proxy.count("comp=copy&copyid=") == 1  # Abort Copy Blob (Azurite: 409)
    assert azure_proxy.count(line(backend, "DELETE", "src.bin")) == 0
    assert await backend.load("src.bin") == b"s" * 300


async def test_a_destination_written_while_its_copy_is_pending_fails_the_move(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another writer's Put Blob on dst ends the pending copy (its copy id is gone): the
    # copy never completed, so the move keeps its source
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=0, then="")
    look = _copies.send_head

    async def written_then_look(url: str, kind: str) -> tuple[Any, dict[str, str]]:
        # another process's write (its hook: the move holds the key in this one)
        await backend._save("dst.bin", b"other", "text/plain", {})
        return await look(url, kind)

    monkeypatch.setattr(_copies, "send_head", written_then_look)
    with pytest.raises(PreconditionFailedError, match="did not complete"):
        await backend.move("src.bin", "dst.bin")
    monkeypatch.undo()
    assert await backend.load("src.bin") == b"s" * 300
    assert await backend.load("dst.bin") == b"other"


async def test_a_move_cancelled_while_its_copy_is_pending_aborts_it(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=50, then="")
    looking, look = asyncio.Event(), _copies.send_head

    async def noted_look(url: str, kind: str) -> tuple[Any, dict[str, str]]:
        looking.set()
        return await look(url, kind)

    monkeypatch.setattr(_copies, "send_head", noted_look)
    task = asyncio.create_task(backend.move("src.bin", "dst.bin"))
    waiting = asyncio.create_task(looking.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    assert looking.is_set(), "the move did not wait for its pending copy"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert azure_proxy.count("comp=copy&copyid=") == 1
    assert azure_proxy.count(line(backend, "DELETE", "src.bin")) == 0
    assert await backend.load("src.bin") == b"s" * 300
    # the quota counts what is stored (here Azurite's whole copy: the abort found it ended)
    stored = sum([(await backend.stat(key)).size for key in await backend.list_files()])
    assert (await backend.get_usage()).used == stored == 600


async def test_looks_left_unanswered_while_a_copy_is_pending_are_made_again(
    backend: AzureStorageBackend, azure_proxy: FaultProxy
) -> None:
    # a pending copy goes on whatever our looks get: a few 503s (more than one look's
    # tries) neither fail the move nor let it delete its source before the copy is seen
    # complete
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=1, then="")
    head = line(backend, "HEAD", "dst.bin")
    azure_proxy.fail_next(_conditional.ATTEMPTS + 1, status=503, code="ServerBusy", match=head)
    await backend.move("src.bin", "dst.bin")
    requests = azure_proxy.requests
    looks = [i for i, request in enumerate(requests) if request.startswith(head)]
    assert len(looks) == 1 + _conditional.ATTEMPTS + 1 + 1  # pending, 503s, success
    delete = next(
        i for i, r in enumerate(requests) if r.startswith(line(backend, "DELETE", "src.bin"))
    )
    assert delete > looks[-1]
    assert await backend.list_files() == ["dst.bin"]
    assert (await backend.get_usage()).used == 300


async def test_a_look_refused_while_a_copy_is_pending_aborts_it(
    backend: AzureStorageBackend, azure_proxy: FaultProxy
) -> None:
    # the move gives up (it cannot see the copy): the copy is aborted first, so that
    # it does not land after the caller was told, and the source is kept; what the
    # destination holds is unknown (here the copy ended), so the quota looks at it
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=1, then="")
    head = line(backend, "HEAD", "dst.bin")
    azure_proxy.fail_next(1, status=403, code="AuthorizationFailure", match=head)
    with pytest.raises(
        StorageUnavailableError, match=r"could not be looked at \(Azure: ac"
    ) as info:
        await backend.move("src.bin", "dst.bin")
    cause = info.value.__cause__
    assert cause is not None
    assert "sig=" not in repr(info.value) + repr(cause)  # no SAS in the error or its cause
    assert azure_proxy.count("comp=copy&copyid=") == 1  # Abort Copy Blob (Azurite: 409)
    assert azure_proxy.count(line(backend, "DELETE", "src.bin")) == 0
    assert await backend.load("src.bin") == b"s" * 300
    stored = sum([(await backend.stat(key)).size for key in await backend.list_files()])
    assert (await backend.get_usage()).used == stored


async def test_a_resent_copy_refused_as_its_first_try_is_pending_awaits_that_copy(
    backend: AzureStorageBackend, azure_proxy: FaultProxy
) -> None:
    # the copy's answer is lost (Azurite copied); Azure refuses the resend with 409
    # PendingCopyOperation while the first try goes on: that copy is the move's, awaited
    # until complete, and the move ends (it was a StorageError, with the copy landing
    # after the caller was told, uncounted)
    await backend.save("src.bin", b"s" * 300)
    put, head = line(backend, "PUT", "dst.bin"), line(backend, "HEAD", "dst.bin")
    azure_proxy.cut_response_after(0, match=put)
    azure_proxy.fail_next(1, status=409, code="PendingCopyOperation", match=put)
    azure_proxy.rewrite_header("x-ms-copy-status", "pending", times=2, match=head)
    await backend.move("src.bin", "dst.bin")
    requests = azure_proxy.requests
    looks = [i for i, request in enumerate(requests) if request.startswith(head)]
    assert len(looks) == 3  # object_store's HEAD, a signed look (pending), one (success)
    delete = next(
        i for i, r in enumerate(requests) if r.startswith(line(backend, "DELETE", "src.bin"))
    )
    assert delete > looks[-1]
    assert await backend.list_files() == ["dst.bin"]
    assert await backend.load("dst.bin") == b"s" * 300
    assert (await backend.get_usage()).used == 300


async def test_a_credential_that_cannot_sign_for_now_fails_the_move_and_keeps_the_source(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the credential chain signs its looks with a user delegation key; one that cannot
    # be had for now (the service unreachable) is no credential that can sign nothing:
    # the copy is not trusted unseen, and the move keeps its source (it deleted it)
    await backend.save("src.bin", b"s" * 300)  # the store is opened with the key
    monkeypatch.setattr(backend, "_access_key", None)  # then signs as the chain does

    async def unreachable(*args: Any, **kwargs: Any) -> str:
        raise StorageUnavailableError("Azure unavailable (no answer)")

    monkeypatch.setattr(ObstoreBackend, "_presign", unreachable)
    azure_proxy.rewrite_header("x-ms-copy-status", "pending", match=line(backend, "HEAD", "dst"))
    with pytest.raises(StorageUnavailableError, match="unavailable"):
        await backend.move("src.bin", "dst.bin")
    monkeypatch.undo()
    assert azure_proxy.count(line(backend, "DELETE", "src.bin")) == 0
    assert await backend.load("src.bin") == b"s" * 300
    stored = sum([(await backend.stat(key)).size for key in await backend.list_files()])
    assert (await backend.get_usage()).used == stored


async def test_a_copy_that_ends_as_its_wait_runs_out_is_not_told_aborted(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the wait is over at the first look (pending), and the abort is refused with 409
    # NoPendingCopyOperation: the copy ended before it; one more look says it is complete,
    # so the move is done (it raised "still pending (aborted)", the copy there all the same)
    monkeypatch.setattr(_copies, "COPY_WAIT", 0.0)
    await backend.save("src.bin", b"s" * 300)
    pending_copy(azure_proxy, backend, looks=1, then="")
    await backend.move("src.bin", "dst.bin")
    assert azure_proxy.count("comp=copy&copyid=") == 1  # Abort Copy Blob (Azurite: 409)
    assert await backend.list_files() == ["dst.bin"]
    assert await backend.load("dst.bin") == b"s" * 300
    assert (await backend.get_usage()).used == 300
