"""Children forked from the test process (``multiprocessing`` with ``fork``): they start
from a copy of its memory, threads and event loops not included."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

DEADLINE = 30.0  # seconds for a child: far above what it needs, a hang fails the test


def forked(target: Callable[[Connection], None]) -> Callable[[], Any]:
    """Fork a child running ``target`` now; returns the call that waits for what it sends
    (a hang fails the test)."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=target, args=(sending,))
    with warnings.catch_warnings():
        # forking a process with threads is what these tests are about (Python 3.12+
        # warns of it)
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        child.start()
    sending.close()

    def result() -> Any:
        try:
            assert receiving.poll(DEADLINE), "the forked child hangs"
            return receiving.recv()
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            receiving.close()

    return result


def in_child(job: Callable[[], Any]) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        try:
            conn.send(job())
        except BaseException as exc:
            conn.send(f"failed: {exc!r}")

    return run
