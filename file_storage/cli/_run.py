"""How a command runs: settings, the backend, the event loop, signals, errors, output."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from file_storage.backends.base import StorageBackend
from file_storage.errors import InvalidKeyError, StorageConfigError, StorageError
from file_storage.factory import create_storage_backend
from file_storage.models import ObjectInfo
from file_storage.settings import StorageSettings

PROG = "file-storage"
#: the exit status of a command whose reader closed its output early (``| head``): what a
#: shell tool killed by SIGPIPE reports (128 + 13), so neither "done" nor "failed"
CLOSED_OUTPUT = 141
Work = Callable[[StorageBackend], Awaitable[int | None]]


@dataclass(frozen=True, slots=True)
class Options:
    """The options every command shares (given before the command name)."""

    env_file: Path | None
    debug: bool


class FileOnlySettings(StorageSettings):
    """Settings read from one env file only: the environment must not leak into them.

    ``--env-file`` and ``migrate --to-env`` name the storage to use; an inherited
    ``STORAGE_TYPE`` (say, the source's during a migration) must not win over the file.
    """

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the parent's rules for the file's values (an empty one counts as unset), so
        # that the file reads as it does when the application loads it as .env
        super().settings_customise_sources(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )
        return (init_settings, dotenv_settings)


#: an env file holds a few settings; a larger one is a mistake (or a device, a log)
MAX_ENV_FILE_BYTES = 2**20


def env_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an env file, or None.

    Checked with ``stat`` (which follows links, as reading does), never by opening: opening
    a FIFO nobody writes to blocks, and reading a device may never end.
    """
    try:
        found = path.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(found.st_mode):
        return "is not a regular file"
    if found.st_size > MAX_ENV_FILE_BYTES:
        return "is larger than 1 MiB"
    return None


class EnvFile(click.Path):
    """An existing env file: a regular file of at most 1 MiB (``--env-file``, ``--to-env``)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        problem = env_file_problem(Path(os.fsdecode(path)))
        if problem is not None:
            self.fail(f"{click.format_filename(path)!r} {problem}.", param, ctx)
        return path


def settings(options: Options) -> StorageSettings:
    """``--env-file`` alone when given, else the environment then ``.env``, as the app does."""
    if options.env_file is None:
        dotenv = Path(".env")  # pydantic-settings reads it, a FIFO too: blocked forever
        # a folder named .env (a virtualenv: `python -m venv .env`) is no env file, and the
        # application skips it: so does the command
        if dotenv.exists() and not dotenv.is_dir():
            problem = env_file_problem(dotenv)
            if problem is not None:
                raise StorageConfigError(f"the env file .env: {problem.removeprefix('is ')}")
        return StorageSettings()
    return file_settings(options.env_file)


def file_settings(path: Path) -> StorageSettings:
    values: dict[str, Any] = {"_env_file": path}
    return FileOnlySettings(**values)


def run(ctx: click.Context, work: Work, config: StorageSettings | None = None) -> None:
    """Build the backend, run ``work`` on it and exit 0, or 1 with one line on stderr."""
    options = ctx.find_object(Options)
    assert options is not None
    if options.debug:
        logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("file_storage").setLevel(logging.DEBUG)
    with errors(ctx, options):
        backend = create_storage_backend(settings(options) if config is None else config)
        code = asyncio.run(_main(backend, work))
    ctx.exit(code or 0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def terminate_as_interrupt() -> None:
    """Outside the event loop, SIGTERM stops the command as Ctrl-C does: exit 1.

    Left at its default it killed the process (143) at a prompt or while settings were
    read, where the documented code is 1; inside the loop ``_main`` cancels instead.
    """
    if threading.current_thread() is threading.main_thread():  # (Python's rule for handlers)
        signal.signal(signal.SIGTERM, _interrupt)


async def _main(backend: StorageBackend, work: Work) -> int | None:
    # SIGTERM cancels the command like Ctrl-C does: uploads in flight are aborted,
    # connections closed, and the process exits 1 instead of dying mid-request
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with backend:
            return await work(backend)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # that restores the default: kill
        terminate_as_interrupt()


@contextmanager
def errors(ctx: click.Context, options: Options) -> Iterator[None]:
    """Storage errors become one line and exit 1; an invalid key is a usage error (2)."""
    try:
        yield
    except InvalidKeyError as exc:
        raise click.UsageError(str(exc), ctx) from exc
    except StorageError as exc:
        fail(ctx, options, str(exc))
    except (asyncio.CancelledError, KeyboardInterrupt):
        fail(ctx, options, "interrupted")
    except OutputError as exc:
        if exc.errno == errno.EPIPE:
            # the reader is done (`| head`): nothing to say, and nothing left to flush at
            # exit either (that would print "Exception ignored ... BrokenPipeError")
            _drop_stdout()
            ctx.exit(CLOSED_OUTPUT)
        fail(ctx, options, f"cannot write the output: {exc.strerror}")


class OutputError(OSError):
    """Standard output cannot be written (closed by its reader, a full disk)."""


def _drop_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextmanager
def writing() -> Iterator[None]:
    """Around writes to standard output: an ``OSError`` there is an ``OutputError``."""
    try:
        yield
    except OSError as exc:
        raise OutputError(exc.errno, exc.strerror) from exc


def echo(text: str, *, nl: bool = True) -> None:
    """Write ``text`` on standard output (what came from the storage: ``printable`` first)."""
    with writing():
        click.echo(text, nl=nl)


def echo_err(text: str) -> None:
    """One line on standard error, escaped for a terminal."""
    click.echo(printable(text), err=True)


# C0 and C1 controls and DEL (escape sequences, line breaks, the 8-bit CSI), and the
# bidirectional controls that show text in another order than it has (a key or metadata
# value written by anyone must not rewrite or disguise the operator's terminal)
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_UNSAFE.update({ord(char): f"\\u{ord(char):04x}" for char in _BIDI})
_UNSAFE_IN_JSON = {  # json.dumps escapes C0 itself; these it leaves as they are
    code: f"\\u{code:04x}" for code in _UNSAFE if code >= 0x7F
}


def printable(text: str) -> str:
    """``text`` with each control character written as an escape (``\\x1b``, ``\\u202e``)."""
    return text.translate(_UNSAFE)


def fail(ctx: click.Context, options: Options, message: str) -> None:
    if options.debug:
        traceback.print_exc()
    echo_err(f"{PROG}: {message}")
    ctx.exit(1)


def info_dict(info: ObjectInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "size": info.size,
        "last_modified": info.last_modified.isoformat(),
        "etag": info.etag,
        "content_type": info.content_type,
        "metadata": dict(info.metadata),
    }


def emit_json(value: object, *, nl: bool = True) -> None:
    """``value`` as JSON on standard output, control characters escaped as ``\\uXXXX``."""
    with writing():
        click.echo(json.dumps(value, ensure_ascii=False).translate(_UNSAFE_IN_JSON), nl=nl)


def human(size: int) -> str:
    """Bytes in decimal units, as ``du -h --si`` and S3's console show them."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def on_terminal() -> bool:
    return sys.stderr.isatty()
