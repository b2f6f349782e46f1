"""S3 small objects (PUT/GET of 4 KiB), listing, and the botocore settings that cost CPU.

Every contender gets a fresh bucket, a warm-up that is not counted, and its share of
each workload in rounds whose order rotates, so a drift of the server (moto slows a
little as it fills) falls on everyone alike. The per-call-client pattern runs fewer
ops (it is ~50x slower); its rates are comparable all the same.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import s3_clients as sc
from benchmarks._common import (
    SMALL,
    Meter,
    MotoServer,
    Row,
    Scale,
    drive,
    log,
    na,
    rotations,
    split,
)

SECTION = "S3 small objects (moto server)"
LIST_SECTION = "S3 listing (moto server)"
TUNING_SECTION = "botocore settings (aioboto3, one client, moto server)"
TRANSPORTS_SECTION = "S3 transports"
TRANSPORTS_NOTE = (
    "The library on each transport against the raw clients under it, 4 KiB objects, "
    "32 in flight; the four alternate in rounds of equal size (the order rotating), so "
    "a drift of the machine falls on all alike."
)
#: the library on aiobotocore and on obstore, and the raw clients under each
TRANSPORTS = (sc.LIBRARY, sc.LIBRARY_OBSTORE, sc.RAW, sc.OBSTORE)

Op = Callable[[int], Awaitable[Any]]
Workload = tuple[str, str, int]  # label, "put"/"get" and key folder, concurrency

WORKLOADS: tuple[Workload, ...] = (
    ("PUT 4 KiB, c=1", "put:c1", 1),
    ("PUT 4 KiB, c=32", "put:c32", 32),
    ("GET 4 KiB, c=32", "get:c32", 32),
)

# each botocore knob alone, then all together (all are safe for a client that, like
# file_storage, validates its own parameters and sends its own CRC32 on writes)
TUNINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "parameter_validation=False": {"parameter_validation": False},
    "checksums when_required": {
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    },
    "max_pool_connections=32": {"max_pool_connections": 32},
    "all three": {
        "parameter_validation": False,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "max_pool_connections": 32,
    },
}


def _key(folder: str, i: int) -> str:
    return f"{folder}/{i:06d}.bin"


async def _open_all(contenders: dict[str, sc.Contender]) -> dict[str, str]:
    """Open every contender; drop (and return the reason for) those that fail."""
    errors: dict[str, str] = {}
    for name, contender in list(contenders.items()):
        try:
            await contender.open()
        except Exception as exc:
            errors[name] = na(exc)
            del contenders[name]
    return errors


def _rows(section: str, label: str, names: list[str], errors: dict[str, str]) -> dict[str, Row]:
    return {n: Row(section, label, n, error=errors.get(n)) for n in names}


async def _close_all(contenders: dict[str, sc.Contender]) -> None:
    for contender in contenders.values():
        try:
            await contender.close()
        except Exception as exc:
            log(f"  (closing {contender.name} failed: {type(exc).__name__})")


async def _run(
    rows: dict[str, Row],
    ops: dict[str, Op],
    counts: dict[str, int],
    warmups: dict[str, int],
    concurrency: int,
    scale: Scale,
    server: MotoServer,
) -> None:
    """Warm up each contender, then run their counts in rotating rounds."""
    live = [name for name in ops if rows[name].error is None]
    for name in list(live):
        try:
            await drive(ops[name], 900_000, warmups[name], concurrency)
        except Exception as exc:
            rows[name].error = na(exc)
            live.remove(name)
    shares = {name: split(counts[name], scale.rounds) for name in live}
    done = dict.fromkeys(live, 0)
    for r, order in enumerate(rotations(live, scale.rounds)):
        for name in order:
            if rows[name].error is not None:
                continue
            size = shares[name][r]
            try:
                with Meter(rows[name], server.ps):
                    await drive(ops[name], done[name], size, concurrency)
            except Exception as exc:
                rows[name].error = na(exc)
                continue
            rows[name].ops += size
            done[name] += size


def _counts(names: list[str], scale: Scale, naive: int) -> tuple[dict[str, int], dict[str, int]]:
    counts = {n: naive if n == sc.NAIVE else scale.small_ops for n in names}
    warmups = {n: max(2, scale.warmup // 10) if n == sc.NAIVE else scale.warmup for n in names}
    return counts, warmups


async def run_small(server: MotoServer, scale: Scale) -> list[Row]:
    """PUT at c=1 and c=32, then GET at c=32 of what the c=32 PUTs wrote."""
    names = list(sc.CONTENDERS)
    contenders = {n: sc.make(n, server.endpoint, server.bucket("small")) for n in names}
    buckets = [c.bucket for c in contenders.values()]
    errors = await _open_all(contenders)
    out: list[Row] = []
    written: dict[str, int] = {}
    data = os.urandom(SMALL)
    try:
        for label, what, concurrency in WORKLOADS:
            log(f"  {label}")
            rows = _rows(SECTION, label, names, errors)
            kind, folder = what.split(":")
            ops = {n: _op(c, kind, folder, data, written.get(n, 0)) for n, c in contenders.items()}
            counts, warmups = _counts(list(ops), scale, scale.naive_ops)
            await _run(rows, ops, counts, warmups, concurrency, scale, server)
            if what == "put:c32":
                written = {n: row.ops for n, row in rows.items()}
            out.extend(rows.values())
    finally:
        await _close_all(contenders)
        for bucket in buckets:
            server.drop(bucket)
    return out


def _op(contender: sc.Contender, kind: str, folder: str, data: bytes, written: int) -> Op:
    if kind == "put":
        return lambda i: contender.put(_key(folder, i), data)
    n = max(written, 1)
    return lambda i: contender.get(_key(folder, i % n))


async def _populate(server: MotoServer, bucket: str, folder: str, count: int) -> None:
    writer = sc.Raw(server.endpoint, bucket)
    await writer.open()
    try:
        await drive(lambda i: writer.put(_key(folder, i), b"x" * 16), 0, count, 32)
    finally:
        await writer.close()


async def run_listing(server: MotoServer, scale: Scale) -> list[Row]:
    """List ``list_keys`` keys (all pages) with every contender, ``list_reps`` times each."""
    bucket = server.bucket("list")
    label = f"list {scale.list_keys:,} keys"
    try:
        log(f"  populating {scale.list_keys:,} keys")
        await _populate(server, bucket, "list", scale.list_keys)
        await _populate(server, bucket, "warm", 10)
        names = list(sc.CONTENDERS)
        contenders = {n: sc.make(n, server.endpoint, bucket) for n in names}
        rows = _rows(LIST_SECTION, label, names, await _open_all(contenders))
        log(f"  {label}")
        try:
            for name, contender in contenders.items():
                try:
                    await contender.count("warm")
                except Exception as exc:
                    rows[name].error = na(exc)
            live = [n for n in contenders if rows[n].error is None]
            for order in rotations(live, scale.list_reps):
                for name in order:
                    if rows[name].error is not None:
                        continue
                    try:
                        with Meter(rows[name], server.ps):
                            found = await contenders[name].count("list")
                    except Exception as exc:
                        rows[name].error = na(exc)
                        continue
                    if found != scale.list_keys:
                        rows[name].error = f"n/a (listed {found} of {scale.list_keys} keys)"
                    rows[name].ops += found
                    rows[name].extra["listings"] = rows[name].extra.get("listings", 0) + 1
        finally:
            await _close_all(contenders)
        return list(rows.values())
    finally:
        server.drop(bucket)


async def run_tuning(server: MotoServer, scale: Scale) -> list[Row]:
    """Raw aioboto3 with each botocore knob, beside file_storage as shipped."""
    variants: dict[str, sc.Contender] = {}
    for label, config in TUNINGS.items():
        variants[label] = sc.Raw(server.endpoint, server.bucket("tune"), config=config)
    variants["file_storage (as shipped)"] = sc.Library(server.endpoint, server.bucket("tune"))
    buckets = [c.bucket for c in variants.values()]
    out: list[Row] = []
    data = os.urandom(SMALL)
    names = list(variants)
    errors = await _open_all(variants)
    try:
        for kind in ("put", "get"):
            label = f"{kind.upper()} 4 KiB, c=32"
            log(f"  tuning: {label}")
            rows = _rows(TUNING_SECTION, label, names, errors)
            ops = {n: _op(c, kind, "t", data, scale.tuning_ops) for n, c in variants.items()}
            counts = dict.fromkeys(ops, scale.tuning_ops)
            warmups = dict.fromkeys(ops, scale.warmup)
            await _run(rows, ops, counts, warmups, 32, scale, server)
            out.extend(rows.values())
    finally:
        await _close_all(variants)
        for bucket in buckets:
            server.drop(bucket)
    return out


async def run_transports(server: MotoServer, scale: Scale) -> list[Row]:
    """PUT then GET at c=32: the library on both transports beside raw aioboto3 and raw
    obstore, interleaved in three times the usual rounds (and ops), for steady ratios."""
    section = f"{TRANSPORTS_SECTION} ({server.label})"
    names = list(TRANSPORTS)
    contenders = {n: sc.make(n, server.endpoint, server.bucket("transports")) for n in names}
    buckets = [c.bucket for c in contenders.values()]
    errors = await _open_all(contenders)
    longer = dataclasses.replace(scale, rounds=scale.rounds * 3)
    out: list[Row] = []
    written: dict[str, int] = {}
    data = os.urandom(SMALL)
    try:
        for label, what, concurrency in WORKLOADS[1:]:  # the c=32 PUT and GET
            log(f"  {section}: {label}")
            rows = _rows(section, label, names, errors)
            kind, folder = what.split(":")
            ops = {n: _op(c, kind, folder, data, written.get(n, 0)) for n, c in contenders.items()}
            counts = dict.fromkeys(ops, scale.small_ops * 3)
            warmups = dict.fromkeys(ops, scale.warmup)
            await _run(rows, ops, counts, warmups, concurrency, longer, server)
            if kind == "put":
                written = {n: row.ops for n, row in rows.items()}
            out.extend(rows.values())
    finally:
        await _close_all(contenders)
        for bucket in buckets:
            server.drop(bucket)
    return out
