"""How a command runs: settings, the backend, the event loop, signals, errors, output."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from file_storage.backends.base import StorageBackend
from file_storage.errors import InvalidKeyError, StorageError
from file_storage.factory import create_storage_backend
from file_storage.models import ObjectInfo
from file_storage.settings import StorageSettings

PROG = "file-storage"
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


def settings(options: Options) -> StorageSettings:
    """``--env-file`` alone when given, else the environment then ``.env``, as the app does."""
    if options.env_file is None:
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
        loop.remove_signal_handler(signal.SIGTERM)


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


def fail(ctx: click.Context, options: Options, message: str) -> None:
    if options.debug:
        traceback.print_exc()
    click.echo(f"{PROG}: {message}", err=True)
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


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


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
