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


def record(key: str, name: str = "ObjectCreated:Put", **obj: object) -> dict[str, Any]:
    """One record as S3 sends it, with ``key`` as it appears in the message (encoded)."""
    return {
        "Records": [
            {
                "eventName": name,
                "s3": {"bucket": {"name": "media-bucket"}, "object": {"key": key, **obj}},
            }
        ]
    }


@pytest.mark.parametrize(
    "key",
    [
        "storage/a%FFb.txt",  # no UTF-8: decoded, it would name another object (U+FFFD)
        "storage/caf%C3.txt",  # a UTF-8 sequence cut short
        "storage/a%zzb.txt",  # no escape: S3 writes a '%' as %25
        "storage/100%.txt",
        "storage/a%2.txt",
    ],
)
def test_a_key_that_is_no_url_encoding_is_left_out(key: str) -> None:
    assert parse_s3_event(record(key, size=3, eTag="abc"), prefix="storage") == []


def test_escapes_decode_to_the_name_s3_stores() -> None:
    events = parse_s3_event(record("storage/100%25+sure%2B%2Fx.txt", size=1), prefix="storage")
    assert [e.key for e in events] == ["100% sure+/x.txt"]


@pytest.mark.parametrize("key", ["storage%2F..%2Fother%2Fa.txt", "storage/a/%2E%2E/../b.txt"])
def test_escaped_dot_segments_never_leave_the_prefix(key: str) -> None:
    assert parse_s3_event(record(key, size=1), prefix="storage") == []


@pytest.mark.parametrize("size", [-1, "5", 5.0, True, None])
def test_a_size_that_is_no_byte_count_is_unknown(size: object) -> None:
    events = parse_s3_event(record("storage/a.txt", size=size, eTag="abc"), prefix="storage")
    assert events == [ObjectEvent("created", "a.txt", None, '"abc"')]


@pytest.mark.parametrize(
    "etag", ['abc"\r\nX-Injected: 1', "a b", '"a"b"', '""', '"', "", 5, "caf\u00e9", "a\x00"]
)
def test_an_etag_no_store_issues_is_left_unknown(etag: object) -> None:
    # no header can carry it: as if_match= it would fail every write, or worse
    events = parse_s3_event(record("storage/a.txt", size=3, eTag=etag), prefix="storage")
    assert events == [ObjectEvent("created", "a.txt", 3, None)]


@pytest.mark.parametrize("etag", ["abc-9", '"abc-9"'])
def test_an_etag_is_quoted_once_as_stat_gives_it(etag: str) -> None:
    events = parse_s3_event(record("storage/a.txt", size=3, eTag=etag), prefix="storage")
    assert events == [ObjectEvent("created", "a.txt", 3, '"abc-9"')]


@pytest.mark.parametrize("name", ["ObjectRemoved:Delete", "LifecycleExpiration:Delete"])
def test_deleting_one_version_is_no_deleted_event(name: str) -> None:
    # purge_versions or a rule expiring noncurrent versions: the key still holds its
    # latest version, and a "deleted" would drop it from an index or a cache
    message = record("storage/a.txt", name, versionId="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrH")
    assert parse_s3_event(message, prefix="storage") == []


@pytest.mark.parametrize(
    ("name", "obj"),
    [
        ("ObjectRemoved:Delete", {}),  # an unversioned bucket
        ("ObjectRemoved:Delete", {"versionId": None}),
        ("ObjectRemoved:Delete", {"versionId": "null"}),
        ("ObjectRemoved:DeleteMarkerCreated", {"versionId": "3HL4kqtJlcpXroDTDmJ"}),
        ("LifecycleExpiration:DeleteMarkerCreated", {"versionId": "3HL4kqtJlcpXroDTDmJ"}),
    ],
)
def test_deleting_the_object_is_a_deleted_event(name: str, obj: dict[str, object]) -> None:
    message = record("storage/a.txt", name, **obj)
    assert parse_s3_event(message, prefix="storage") == [ObjectEvent("deleted", "a.txt")]


@pytest.mark.parametrize(
    "name",
    [
        "ObjectRestore:Completed",
        "ObjectRestore:Delete",
        "Replication:OperationFailedReplication",
        "LifecycleTransition",
        "ObjectTagging:Put",
        "ObjectAcl:Put",
        "IntelligentTiering",
        "s3:TestEvent",
        "",
    ],
)
def test_other_event_types_give_nothing(name: str) -> None:
    assert parse_s3_event(record("storage/a.txt", name, size=1), prefix="storage") == []


@pytest.mark.parametrize("prefix", ["users/a", "users/a/", "/users/a/"])
def test_a_prefix_never_matches_a_longer_folder_name(prefix: str) -> None:
    message = {
        "Records": [
            record("users/ab/x.txt", size=1)["Records"][0],
            record("users/a/x.txt", size=1)["Records"][0],
            record("users/a", size=1)["Records"][0],
        ]
    }
    assert [e.key for e in parse_s3_event(message, prefix=prefix)] == ["x.txt"]


def test_wrong_types_in_a_record_are_left_out() -> None:
    message = {
        "Records": [
            "x",
            {"eventName": ["ObjectCreated:Put"], "s3": {"object": {"key": "storage/a"}}},
            {"eventName": "ObjectCreated:Put", "s3": "x"},
            {"eventName": "ObjectCreated:Put", "s3": {"object": {"key": 5}}},
            {"eventName": "ObjectCreated:Put", "s3": {"object": []}},
        ]
    }
    assert parse_s3_event(message, prefix="storage") == []


def test_an_eventbridge_event_is_a_value_error() -> None:
    event = {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {"bucket": {"name": "media-bucket"}, "object": {"key": "storage/a.txt"}},
    }
    with pytest.raises(ValueError, match="not an S3 notification"):
        parse_s3_event(event, prefix="storage")


def test_deep_json_is_a_value_error_not_a_recursion_error() -> None:
    deep = '{"Records": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ValueError, match="not an S3 notification"):
        parse_s3_event(deep, prefix="storage")
    envelope = json.dumps({"Type": "Notification", "Message": deep})
    with pytest.raises(ValueError, match="not an S3 notification"):
        parse_s3_event(envelope, prefix="storage")


def test_a_lambda_batch_of_sqs_messages_is_a_value_error_not_silence() -> None:
    # the event a Lambda function gets from SQS wraps each notification in a message:
    # read as records of its own, it gave no events at all, and the objects went unseen
    body = (SAMPLES / "put.json").read_text()
    batch = {"Records": [{"messageId": "1", "body": body, "eventSource": "aws:sqs"}]}
    with pytest.raises(ValueError, match="each record's body"):
        parse_s3_event(batch, prefix="storage")
    assert len(parse_s3_event(batch["Records"][0]["body"], prefix="storage")) == 1


def test_a_lambda_batch_of_sns_notifications_is_a_value_error_not_silence() -> None:
    envelope = sample("sns_envelope.json")
    batch = {"Records": [{"EventSource": "aws:sns", "Sns": envelope}]}
    with pytest.raises(ValueError, match="Sns"):
        parse_s3_event(batch, prefix="storage")
    assert len(parse_s3_event(batch["Records"][0]["Sns"], prefix="storage")) == 2
