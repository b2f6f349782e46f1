"""The large-object benchmark runs every S3 contender, file_storage on obstore included.

Needs psutil and obstore, which the bench extra installs (``make bench`` uses them); the
transfer goes to the benchmark's own moto server on 127.0.0.1, in a child interpreter,
the way ``python -m benchmarks --only s3-large`` runs it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("psutil")
pytest.importorskip("obstore")

from benchmarks import s3_clients as sc
from benchmarks import s3_large
from benchmarks._child import IMPORTS
from benchmarks._common import MIB, MotoServer


def test_the_large_table_has_file_storage_on_obstore() -> None:
    assert sc.LIBRARY_OBSTORE in sc.CONTENDERS
    # the child imports each contender's modules before its RSS baseline
    assert set(sc.CONTENDERS) <= set(IMPORTS)


@pytest.mark.s3
def test_file_storage_on_obstore_uploads_and_downloads_a_multipart_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the server and the children are ``python -m benchmarks...``, wherever the test runs
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    size = sc.THRESHOLD + 3 * MIB  # above the threshold: parts, not one PUT
    src = s3_large.make_file(tmp_path / "src.bin", size)
    server = MotoServer().start()
    try:
        bucket = server.bucket("test")
        result = s3_large.run_phases(
            {
                "contender": sc.LIBRARY_OBSTORE,
                "endpoint": server.endpoint,
                "bucket": bucket,
                "server_pid": server.proc.pid if server.proc else None,
                "src": str(src),
                "dst": str(tmp_path / "dst.bin"),
            }
        )
        client = server.sync_client()
        try:
            stored = client.head_object(Bucket=bucket, Key=f"{sc.ROOT}/large.bin")
        finally:
            client.close()
        server.drop(bucket)
    finally:
        server.stop()
    assert "error" not in result, result
    assert set(result["phases"]) == {"upload", "download"}
    assert stored["ContentLength"] == size
    assert "-" in stored["ETag"]  # a multipart upload's ETag: "<md5 of md5s>-<parts>"
    for phase in result["phases"].values():
        assert phase["seconds"] > 0
        assert phase["peak_rss"] >= 0
