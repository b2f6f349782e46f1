"""Which AWS partition an S3 endpoint (or a region, with no endpoint) belongs to.

Bucket names are global within a partition (aws, aws-cn, aws-us-gov, the ISO ones, ...)
and only there: every endpoint of one partition reaches the same bucket, another
partition's reaches another one. The partitions, their regions and DNS suffixes are
read from botocore's ``partitions.json`` when botocore is installed (without importing
it), else from the copy below.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from file_storage._json import parse_json

__all__ = ["aws_partition"]


@dataclass(frozen=True, slots=True)
class _Partition:
    id: str
    region_regex: re.Pattern[str]
    regions: frozenset[str]
    suffixes: tuple[str, ...]  # the DNS suffix, and the dual-stack one

    def has_region(self, region: str) -> bool:
        return region in self.regions or self.region_regex.fullmatch(region) is not None


# botocore 1.40's partitions.json, for when botocore is not installed
_KNOWN = (
    ("aws", r"(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+", "amazonaws.com", "api.aws"),
    ("aws-cn", r"cn\-\w+\-\d+", "amazonaws.com.cn", "api.amazonwebservices.com.cn"),
    ("aws-eusc", r"eusc\-(de)\-\w+\-\d+", "amazonaws.eu", "api.amazonwebservices.eu"),
    ("aws-iso", r"us\-iso\-\w+\-\d+", "c2s.ic.gov", "api.aws.ic.gov"),
    ("aws-iso-b", r"us\-isob\-\w+\-\d+", "sc2s.sgov.gov", "api.aws.scloud"),
    ("aws-iso-e", r"eu\-isoe\-\w+\-\d+", "cloud.adc-e.uk", "api.cloud-aws.adc-e.uk"),
    ("aws-iso-f", r"us\-isof\-\w+\-\d+", "csp.hci.ic.gov", "api.aws.hci.ic.gov"),
    ("aws-us-gov", r"us\-gov\-\w+\-\d+", "amazonaws.com", "api.aws"),
)


@functools.cache
def _partitions() -> tuple[_Partition, ...]:
    spec = importlib.util.find_spec("botocore")  # finds the package, runs none of it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            data = parse_json((Path(folder) / "data" / "partitions.json").read_text())
            return tuple(
                _Partition(
                    entry["id"],
                    re.compile(entry["regionRegex"].removeprefix("^").removesuffix("$")),
                    frozenset(entry.get("regions", ())),
                    tuple(
                        entry["outputs"][name]
                        for name in ("dnsSuffix", "dualStackDnsSuffix")
                        if entry["outputs"].get(name)
                    ),
                )
                for entry in data["partitions"]
            )
        except (OSError, ValueError, KeyError, TypeError, re.error):
            continue
    return tuple(
        _Partition(name, re.compile(regex), frozenset(), (dns, dual))
        for name, regex, dns, dual in _KNOWN
    )


def _of_region(region: str) -> _Partition | None:
    """The partition of ``region``, as botocore finds it: a listed region, else a pattern."""
    partitions = _partitions()
    for partition in partitions:
        if region in partition.regions:
            return partition
    for partition in partitions:
        if partition.region_regex.fullmatch(region):
            return partition
    return None


def aws_partition(url: str | None, region: str) -> str | None:
    """The AWS partition whose buckets ``url`` reaches (``None``: not an AWS S3 endpoint).

    With no ``url`` (the SDK's own endpoint) the partition is ``region``'s. An endpoint is
    read in any of its spellings: ``s3.<region>``, ``s3-<region>``, ``s3.dualstack.<region>``,
    ``s3-fips...``, a bucket's virtual host, a trailing dot. An endpoint naming no region
    (``s3.amazonaws.com``) belongs to ``region``'s partition when that one shares its DNS
    suffix (aws-us-gov shares amazonaws.com with aws), else to the suffix's first.
    """
    configured = _of_region(region)
    if url is None:
        return configured.id if configured is not None else "aws"  # botocore's default
    host = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    for suffix in sorted({s for p in _partitions() for s in p.suffixes}, key=len, reverse=True):
        if host.endswith(f".{suffix}"):
            labels = host[: -len(suffix) - 1].split(".")
            break
    else:
        return None
    # the service's label: the last one naming S3 (a virtual host's bucket comes first)
    s3 = [i for i, label in enumerate(labels) if label == "s3" or label.startswith("s3-")]
    if not s3:
        return None
    first = labels[s3[-1]]
    candidates = [first.removeprefix("s3-").removeprefix("fips-"), *labels[s3[-1] + 1 :]]
    sharing = [p for p in _partitions() if suffix in p.suffixes]
    for candidate in candidates:
        found = _of_region(candidate)
        if found is not None:
            return found.id if found in sharing else None
    return configured.id if configured in sharing else sharing[0].id
