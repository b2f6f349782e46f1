"""parse_s3_event: S3 bucket notifications (tests/s3_notifications/) as ObjectEvents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from file_storage import InvalidKeyError, ObjectEvent, parse_s3_event

SAMPLES = Path(__file__).parent / "s3_notifications"


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return loaded


def test_put_gives_created_with_decoded_key_size_and_quoted_etag() -> None:
    assert parse_s3_event(sample("put.json"), prefix="storage") == [
        ObjectEvent(
            "created",
            "uploads/2026/11/My Holiday Video (final).webm",
            1048576,
            '"d41d8cd98f00b204e9800998ecf8427e"',
        )
    ]


def test_multipart_complete_gives_created_with_the_multipart_etag() -> None:
    assert parse_s3_event(sample("multipart_complete.json"), prefix="storage") == [
        ObjectEvent(
            "created",
            "sessions/s1/recording.webm",
            73400320,
            '"6b1e9f4e2d2b5b1c0c8e7f8a9d0e1f2a-9"',
        )
    ]


def test_copy_gives_created_with_a_unicode_key() -> None:
    assert parse_s3_event(sample("copy.json"), prefix="storage") == [
        ObjectEvent("created", "archive/résumé.pdf", 2048, '"0f343b0931126a20f133d67c2b018a3b"')
    ]


def test_delete_gives_deleted() -> None:
    assert parse_s3_event(sample("delete.json"), prefix="storage") == [
        ObjectEvent("deleted", "temp/upload-1.part")
    ]


def test_delete_marker_gives_deleted() -> None:
    assert parse_s3_event(sample("delete_marker.json"), prefix="storage") == [
        ObjectEvent("deleted", "docs/contract.pdf")
    ]


def test_expiry_by_a_lifecycle_rule_gives_deleted() -> None:
    assert parse_s3_event(sample("lifecycle_expiration.json"), prefix="storage") == [
        ObjectEvent("deleted", "temp/upload-2.part")
    ]


def test_sns_envelope_is_unwrapped() -> None:
    assert parse_s3_event(sample("sns_envelope.json"), prefix="storage") == [
        ObjectEvent("created", "uploads/a b.txt", 5, '"5d41402abc4b2a76b9719d911017c592"'),
        ObjectEvent("deleted", "uploads/old.txt"),
    ]


def test_json_text_and_bytes_as_an_sqs_body_are_accepted() -> None:
    text = (SAMPLES / "delete.json").read_text()
    expected = [ObjectEvent("deleted", "temp/upload-1.part")]
    assert parse_s3_event(text, prefix="storage") == expected
    assert parse_s3_event(text.encode(), prefix="storage/") == expected


def test_keys_outside_the_prefix_and_folder_markers_are_left_out() -> None:
    events = parse_s3_event(sample("outside_prefix_and_folder.json"), prefix="storage")
    assert events == [ObjectEvent("created", "kept.txt", 3, '"900150983cd24fb0d6963f7d28e17f72"')]


def test_the_whole_bucket_prefix_keeps_full_keys() -> None:
    events = parse_s3_event(sample("outside_prefix_and_folder.json"), prefix="")
    assert [e.key for e in events] == ["other-app/logs/a.log", "storage/kept.txt"]


def test_a_prefix_is_a_folder_never_a_name_prefix() -> None:
    assert parse_s3_event(sample("put.json"), prefix="stor") == []


def test_s3_test_event_gives_nothing() -> None:
    assert parse_s3_event(sample("test_event.json"), prefix="storage") == []


@pytest.mark.parametrize(
    "message", ["not json", "[]", '{"Records": "x"}', {"Hello": "world"}, b"\xff"]
)
def test_what_is_no_notification_is_a_value_error(message: object) -> None:
    with pytest.raises(ValueError, match="not an S3 notification"):
        parse_s3_event(message, prefix="storage")  # type: ignore[arg-type]


def test_a_bad_prefix_is_an_invalid_key_error() -> None:
    with pytest.raises(InvalidKeyError):
        parse_s3_event(sample("put.json"), prefix="a//b")
