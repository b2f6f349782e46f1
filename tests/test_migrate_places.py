"""migrate() refuses a destination in the same place as the source (every object would
look already copied, and delete_source would delete the only copies): one folder reached
by two paths or bind mounts, one bucket through any endpoint of its server or partition."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectInfo,
    S3StorageBackend,
    StorageBackend,
    migrate,
)
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET


@pytest.mark.parametrize(
    ("source_root", "dest_root", "prefix"),
    [
        ("store", "store/", ""),
        ("store", "store", "a"),
        ("store", "store/a", ""),
        ("store/a", "store", ""),
    ],
)
async def test_a_destination_in_the_same_place_as_the_source_is_refused(
    tmp_path: Path, source_root: str, dest_root: str, prefix: str
) -> None:
    # two backends over one folder (a settings file pointing at the source): every object
    # looked already copied, and delete_source=True deleted them all
    source = LocalStorageBackend(tmp_path / source_root)
    dest = LocalStorageBackend(tmp_path / dest_root)
    await source.save("a/precious.txt", b"the only copy")
    with pytest.raises(ValueError, match="same place"):
        await migrate(source, dest, prefix, delete_source=True)
    assert await source.load("a/precious.txt") == b"the only copy"


@pytest.mark.parametrize("dest_root", ["link", "store/sub/.."])
async def test_the_same_folder_reached_by_another_path_is_refused(
    tmp_path: Path, dest_root: str
) -> None:
    # a symlink to the source's root (or a path with ".."): the same files under another
    # name, and delete_source=True deleted the only copy of each
    (tmp_path / "store" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "store")
    source = LocalStorageBackend(tmp_path / "store")
    dest = LocalStorageBackend(tmp_path / dest_root)
    await source.save("a/precious.txt", b"the only copy")
    with pytest.raises(ValueError, match="same place"):
        await migrate(source, dest, delete_source=True)
    assert await source.load("a/precious.txt") == b"the only copy"


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[Callable[[Path, Path], None]]:
    """Mounts a folder at another path (root only: skipped where mounting is refused)."""
    mounted: list[Path] = []

    def mount(folder: Path, at: Path) -> None:
        at.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "--bind", str(folder), str(at)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
        mounted.append(at)

    yield mount
    for at in reversed(mounted):
        subprocess.run(["umount", "--lazy", str(at)], check=True)  # a backend may hold it open


@pytest.mark.parametrize(("dest_under", "prefix"), [("", ""), ("", "a"), ("a", "")])
async def test_the_same_folder_through_a_bind_mount_is_refused(
    tmp_path: Path, bind_mount: Callable[[Path, Path], None], dest_under: str, prefix: str
) -> None:
    # no path comparison sees it (as with a case-insensitive file system): the folders
    # are compared by identity, and delete_source deleted the only copies
    (tmp_path / "store" / "a").mkdir(parents=True)
    bind_mount(tmp_path / "store", tmp_path / "mnt")
    source = LocalStorageBackend(tmp_path / "store")
    dest = LocalStorageBackend(tmp_path / "mnt" / dest_under)
    await source.save("a/precious.txt", b"the only copy")
    with pytest.raises(ValueError, match="same storage"):
        await migrate(source, dest, prefix, delete_source=True)
    assert await source.load("a/precious.txt") == b"the only copy"


@pytest.mark.parametrize(
    ("source_root", "dest_root", "prefix"),
    [
        ("store", "mnt", ""),  # the destination (store/a) inside the source
        ("mnt", "store", ""),  # the source inside the destination
        ("store", "mnt/b", ""),  # deeper inside
        ("store/a", "mnt", ""),  # the same folder
        ("store", "mnt", "a"),  # store/a against store/a/a
    ],
)
async def test_a_subfolder_reached_through_a_bind_mount_is_refused(
    tmp_path: Path,
    bind_mount: Callable[[Path, Path], None],
    source_root: str,
    dest_root: str,
    prefix: str,
) -> None:
    # mnt is store/a mounted elsewhere: neither root's identity is the other's, nor is it
    # met walking up from either; the mount table tells where in its file system each is
    (tmp_path / "store" / "a" / "b").mkdir(parents=True)
    bind_mount(tmp_path / "store" / "a", tmp_path / "mnt")
    source = LocalStorageBackend(tmp_path / source_root)
    dest = LocalStorageBackend(tmp_path / dest_root)
    await source.save("a/precious.txt", b"the only copy")
    with pytest.raises(ValueError, match="same place"):
        await migrate(source, dest, prefix, delete_source=True)
    assert await source.load("a/precious.txt") == b"the only copy"


async def test_a_folder_moved_beside_a_bind_mounted_subfolder_is_allowed(
    tmp_path: Path, bind_mount: Callable[[Path, Path], None]
) -> None:
    # store/x into mnt/x, which is store/a/x: beside the folder moved, not inside it
    (tmp_path / "store" / "a").mkdir(parents=True)
    bind_mount(tmp_path / "store" / "a", tmp_path / "mnt")
    source = LocalStorageBackend(tmp_path / "store")
    dest = LocalStorageBackend(tmp_path / "mnt")
    await source.save("x/a.txt", b"a")
    report = await migrate(source, dest, "x", delete_source=True)
    assert (report.copied, report.failed) == (1, {})
    assert (tmp_path / "store" / "a" / "x" / "a.txt").read_bytes() == b"a"


@pytest.mark.parametrize("moved", ["source", "dest"])
async def test_a_root_renamed_after_its_backend_was_made_is_found_where_it_went(
    tmp_path: Path, moved: str
) -> None:
    # the backend holds its folder open and follows it: under its old name it looked
    # like another place, and delete_source deleted the only copies
    old = LocalStorageBackend(tmp_path / "store")
    await old.save("a/precious.txt", b"the only copy")
    (tmp_path / "store").rename(tmp_path / "moved")
    new = LocalStorageBackend(tmp_path / "moved")
    source, dest = (old, new) if moved == "source" else (new, old)
    with pytest.raises(ValueError, match="same place"):
        await migrate(source, dest, delete_source=True)
    assert (tmp_path / "moved" / "a" / "precious.txt").read_bytes() == b"the only copy"


async def test_a_bind_mounted_destination_beside_the_folder_moved_is_allowed(
    tmp_path: Path, bind_mount: Callable[[Path, Path], None]
) -> None:
    (tmp_path / "store" / "new").mkdir(parents=True)
    bind_mount(tmp_path / "store", tmp_path / "mnt")
    source = LocalStorageBackend(tmp_path / "store")
    dest = LocalStorageBackend(tmp_path / "mnt" / "new")
    await source.save("old/a.txt", b"a")
    report = await migrate(source, dest, "old", delete_source=True)
    assert (report.copied, report.failed) == (1, {})
    assert (tmp_path / "store" / "new" / "old" / "a.txt").read_bytes() == b"a"


async def test_a_destination_beside_the_folder_moved_is_allowed(tmp_path: Path) -> None:
    source = LocalStorageBackend(tmp_path / "store")
    dest = LocalStorageBackend(tmp_path / "store" / "new")
    await source.save("old/a.txt", b"a")
    report = await migrate(source, dest, "old", delete_source=True)
    assert (report.copied, report.failed) == (1, {})
    assert await dest.load("old/a.txt") == b"a"


class NothingStored(S3StorageBackend):
    """An S3 backend listing nothing and sending no request (these tests name AWS)."""

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for info in ():
            yield info


def aws(endpoint_url: str | None, region: str) -> S3StorageBackend:
    return NothingStored(
        "media", prefix="data", region=region, endpoint_url=endpoint_url,
        access_key_id=FAKE_KEY_ID, secret_access_key=FAKE_SECRET,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        ((None, "us-east-1"), ("https://s3.amazonaws.com.", "us-east-1")),
        ((None, "us-gov-west-1"), ("https://s3-fips.us-gov-east-1.amazonaws.com", "us-east-1")),
        (("https://s3-fips-us-gov-west-1.amazonaws.com", "us-gov-west-1"), (None, "us-gov-east-1")),
        (("https://s3.amazonaws.com", "us-gov-west-1"), (None, "us-gov-east-1")),
        (
            (None, "cn-north-1"),
            ("https://s3.dualstack.cn-northwest-1.amazonaws.com.cn", "us-east-1"),
        ),
        (("https://media.s3.eu-west-1.amazonaws.com", "eu-west-1"), (None, "ap-south-1")),
        (
            ("https://s3-eu-west-1.amazonaws.com", "eu-west-1"),
            ("https://s3.amazonaws.com", "eu-west-1"),
        ),
        ((None, "us-iso-east-1"), ("https://s3.us-iso-west-1.c2s.ic.gov", "us-iso-east-1")),
        ((None, "us-isob-east-1"), ("https://s3.dualstack.us-isob-east-1.sc2s.sgov.gov", "x")),
    ],
)
async def test_the_same_aws_bucket_through_any_endpoint_of_its_partition_is_refused(
    source: tuple[str | None, str], dest: tuple[str | None, str]
) -> None:
    # bucket names are global in a partition: every endpoint of it (any spelling) and the
    # SDK's own one reach the same bucket, and delete_source deleted the only copies
    with pytest.raises(ValueError, match="same place"):
        await migrate(aws(*source), aws(*dest), delete_source=True)


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        ((None, "us-east-1"), (None, "us-gov-west-1")),
        ((None, "us-east-1"), (None, "cn-north-1")),
        ((None, "eu-central-1"), (None, "eusc-de-east-1")),
        ((None, "us-iso-east-1"), (None, "us-isob-east-1")),
        (
            ("https://s3.amazonaws.com", "us-east-1"),
            ("https://s3.us-gov-west-1.amazonaws.com", "us-east-1"),
        ),
        (
            ("https://s3.amazonaws.com", "us-east-1"),
            ("https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ),
    ],
)
async def test_the_same_bucket_name_in_another_aws_partition_is_another_place(
    source: tuple[str | None, str], dest: tuple[str | None, str]
) -> None:
    # aws, aws-cn, aws-us-gov, the ISO partitions: each has buckets of its own
    report = await migrate(aws(*source), aws(*dest), delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (0, 0, {})


def gcs(endpoint_url: str | None) -> StorageBackend:
    from file_storage.backends.gcs import GCSStorageBackend

    return GCSStorageBackend("media", prefix="data", endpoint_url=endpoint_url)


def azure(**how: str) -> StorageBackend:
    from file_storage.backends.azure import AzureStorageBackend

    return AzureStorageBackend("media", prefix="data", **how)


PORTAL = (  # as Azure's portal gives it
    "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net"
)


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        (lambda: gcs(None), lambda: gcs("https://storage.googleapis.com/")),
        (lambda: gcs("http://localhost:4443"), lambda: gcs("http://127.0.0.1:4443")),
        (
            lambda: azure(account="acct", access_key="a2V5"),
            lambda: azure(connection_string=PORTAL),
        ),
        (
            lambda: azure(account="acct", access_key="a2V5"),
            lambda: azure(account="acct", endpoint_url="http://acct.blob.core.windows.net"),
        ),
        (
            lambda: azure(connection_string="UseDevelopmentStorage=true"),
            lambda: azure(
                account="devstoreaccount1", endpoint_url="http://localhost:10000/devstoreaccount1"
            ),
        ),
        (
            lambda: aws("http://localhost:9000", "us-east-1"),
            lambda: aws("http://127.0.0.1:9000", "x"),
        ),
        (  # IPv4-mapped IPv6: the same socket as 127.0.0.1
            lambda: aws("http://[::ffff:127.0.0.1]:9000", "us-east-1"),
            lambda: aws("http://LOCALHOST.:9000", "us-east-1"),
        ),
    ],
)
async def test_the_same_bucket_through_the_default_or_another_name_of_its_server_is_refused(
    source: Callable[[], StorageBackend], dest: Callable[[], StorageBackend]
) -> None:
    # the store's own endpoint spelled out (an Azure portal connection string names it),
    # an emulator as localhost and as 127.0.0.1: the same objects, which delete_source
    # deleted; refused before any request
    with pytest.raises(ValueError, match="same place"):
        await migrate(source(), dest(), delete_source=True)


@pytest.mark.parametrize(
    ("source", "dest"),
    [
        ("http://minio.localhost", "http://garage.localhost"),
        ("http://minio.localhost:9000", "http://localhost:9000"),
    ],
)
async def test_sub_domains_of_localhost_are_servers_of_their_own(source: str, dest: str) -> None:
    # loopback all (no warning for http://), but a proxy on this machine routes each
    # name to a server of its own (Traefik, Caddy): refusing them as one store would
    # stop a migration between two emulators; the cost of the other choice (one server
    # through two names) is spelling the endpoint one way, as with any DNS alias
    report = await migrate(aws(source, "us-east-1"), aws(dest, "us-east-1"), delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (0, 0, {})


def test_the_built_in_aws_partitions_match_botocores() -> None:
    # the copy used without botocore: the same partitions, regions and DNS suffixes
    from file_storage.backends import _aws

    read = {(p.id, p.region_regex.pattern, p.suffixes) for p in _aws._partitions()}
    assert read == {(name, regex, (dns, dual)) for name, regex, dns, dual in _aws._KNOWN}
