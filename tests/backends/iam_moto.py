"""A moto server of its own with IAM enforcement on, for the S3 permission tests.

The session's moto server (tests/conftest.py) accepts any credentials. This one runs in a
child process, so that turning its IAM checks on touches no other test: moto reads
``INITIAL_NO_AUTH_ACTION_COUNT`` when it is imported, answers that many requests
unchecked, and checks every later one against the IAM policies of the access key that
signed it. The unchecked requests create an ``admin`` user allowed everything; the tests
set up buckets and users with its key, and drive the backend with a user's key.

What moto checks (moto 5.2, measured): each request's signature, and its S3 API
*operation name* as the action (``s3:HeadObject``, ``s3:ListObjectsV2``,
``s3:CreateMultipartUpload``...), against the policy's ``Action`` and ``Resource``; not
the IAM action AWS requires for that operation (``s3:GetObject`` for HeadObject,
``s3:ListBucket`` for ListObjectsV2...: AWS, "Required permissions for Amazon S3 API
operations"). Its ``ACTION_MAP`` (moto/s3/responses.py) names those AWS actions but is
not what it checks. So :func:`for_moto` gives a policy, beside each AWS action, the
operations AWS documents that action as allowing (:data:`OPERATIONS`; DeleteObjects on
the bucket, where moto checks it): leaving an action out of the policy then denies
those operations on moto as on AWS. moto does not check ``Condition``, the read of a
copy's source, a version id's own action, presigned requests (it answers them 500 with
IAM on), nor KMS keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

__all__ = ["OPERATIONS", "IamMoto", "Keys", "for_moto"]

Keys = dict[str, str]  # AccessKeyId, SecretAccessKey

# The child process: a moto server on loopback at a free port, which it prints, until
# its stdin closes (the test process closed it, or died).
_SERVER = """
import sys
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""
# the requests answered unchecked: create the admin user, its policy, its access key
_UNCHECKED = 3
_ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}

#: The S3 API operations each IAM action allows, as AWS documents them ("Required
#: permissions for Amazon S3 API operations"), limited to the operations the backend
#: sends. Actions that only differ from another by a version id (s3:GetObjectVersion,
#: s3:DeleteObjectVersion) name no operation of their own: moto checks the operation.
OPERATIONS: dict[str, tuple[str, ...]] = {
    "s3:GetObject": ("GetObject", "HeadObject"),
    "s3:PutObject": (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "CopyObject",
        "UploadPartCopy",
    ),
    "s3:DeleteObject": ("DeleteObject", "DeleteObjects"),
    "s3:AbortMultipartUpload": ("AbortMultipartUpload",),
    "s3:ListBucket": ("ListObjectsV2", "ListObjects", "HeadBucket"),
    "s3:ListBucketVersions": ("ListObjectVersions",),
    "s3:GetBucketVersioning": ("GetBucketVersioning",),
    "s3:PutBucketVersioning": ("PutBucketVersioning",),
    "s3:GetLifecycleConfiguration": ("GetBucketLifecycleConfiguration",),
    "s3:PutLifecycleConfiguration": ("PutBucketLifecycleConfiguration", "DeleteBucketLifecycle"),
}


# AWS checks DeleteObjects key by key (s3:DeleteObject on each object); moto checks the
# operation once, on the bucket's ARN
_ON_BUCKET = frozenset({"DeleteObjects"})


def for_moto(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` with, beside each action, the operation names moto checks in its place."""
    statements = []
    for statement in policy["Statement"]:
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else list(actions)
        ops = [op for action in actions for op in OPERATIONS.get(action, ())]
        here = [f"s3:{op}" for op in ops if op not in _ON_BUCKET]
        statements.append({**statement, "Action": actions + here})
        if moved := [f"s3:{op}" for op in ops if op in _ON_BUCKET]:
            bucket = statement["Resource"].split("/", 1)[0]
            statements.append({"Effect": statement["Effect"], "Action": moved, "Resource": bucket})
    return {**policy, "Statement": statements}


class IamMoto:
    """The child moto server with IAM on; :meth:`close` stops it."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STORAGE_"))}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_UNCHECKED)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            assert self._process.stdout is not None
            port = int(self._process.stdout.readline())
            self.endpoint = f"http://127.0.0.1:{port}"
            # any key signs the unchecked requests; every later one needs a user's
            iam = self._client("iam", {"AccessKeyId": "setup", "SecretAccessKey": "setup"})
            iam.create_user(UserName="admin")
            iam.put_user_policy(
                UserName="admin", PolicyName="all", PolicyDocument=json.dumps(_ALLOW_ALL)
            )
            self.admin: Keys = self._keys(iam, "admin")
        except BaseException:
            self.close()
            raise

    def _client(self, service: str, keys: Keys) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys["AccessKeyId"],
            aws_secret_access_key=keys["SecretAccessKey"],
        )

    @staticmethod
    def _keys(iam: Any, user: str) -> Keys:
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def s3(self, keys: Keys | None = None) -> Any:
        """A boto3 S3 client signing with ``keys`` (the admin's by default)."""
        return self._client("s3", keys or self.admin)

    def user(self, policy: dict[str, Any]) -> Keys:
        """A new IAM user whose only policy is ``policy`` (made moto's with :func:`for_moto`)."""
        name = f"user-{uuid.uuid4().hex[:12]}"
        iam = self._client("iam", self.admin)
        iam.create_user(UserName=name)
        document = json.dumps(for_moto(policy))
        iam.put_user_policy(UserName=name, PolicyName="storage", PolicyDocument=document)
        return self._keys(iam, name)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
