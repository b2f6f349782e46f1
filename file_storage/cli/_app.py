"""The ``file-storage`` commands, one per storage operation, on Click."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from file_storage._migrate import MigrationReport, Outcome, migrate
from file_storage._signing import MAX_PRESIGN_SECONDS
from file_storage.backends.base import StorageBackend
from file_storage.cli import _run
from file_storage.cli._progress import Bar, MigrationBar
from file_storage.cli._run import (
    Options,
    echo,
    echo_err,
    emit_json,
    human,
    info_dict,
    printable,
    run,
    writing,
)
from file_storage.factory import create_storage_backend

__all__ = ["app"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=_run.EnvFile(),
    help="Read the STORAGE_* settings from this file only (not the environment, not .env).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and DEBUG logs.")
@click.pass_context
def app(ctx: click.Context, env_file: Path | None, debug: bool) -> None:
    """Inspect and operate the storage that the STORAGE_* settings select.

    Exit codes: 0 ok, 1 the operation failed, 2 a usage error.
    """
    _run.terminate_as_interrupt()
    ctx.obj = Options(env_file, debug)


@app.command("ls")
@click.argument("prefix", default="")
@click.option("-l", "--long", "long_", is_flag=True, help="Size, last modified and key.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of objects.")
@click.pass_context
def ls(ctx: click.Context, prefix: str, long_: bool, as_json: bool) -> None:
    """List the keys under PREFIX (a folder; everything when omitted), sorted."""

    async def work(backend: StorageBackend) -> None:
        first = True
        if as_json:
            echo("[", nl=False)
        async for info in backend.iter_files(prefix):
            if as_json:
                echo("" if first else ",", nl=False)
                emit_json(info_dict(info), nl=False)
            elif long_:
                stamp = info.last_modified.strftime("%Y-%m-%d %H:%M:%S")
                echo(f"{info.size:>12}  {stamp}  {printable(info.key)}")
            else:
                echo(printable(info.key))
            first = False
        if as_json:
            echo("]")

    run(ctx, work)


@app.command("stat")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="A JSON object.")
@click.pass_context
def stat(ctx: click.Context, key: str, as_json: bool) -> None:
    """Show what the storage knows about the object KEY."""

    async def work(backend: StorageBackend) -> None:
        found = info_dict(await backend.stat(key))
        if as_json:
            emit_json(found)
            return
        for name, value in found.items():
            if name == "metadata":
                for meta, text in value.items():
                    echo(f"metadata.{meta}: {printable(text)}")
            else:
                echo(f"{name}: {'' if value is None else printable(str(value))}")

    run(ctx, work)


@app.command("cat")
@click.argument("key")
@click.pass_context
def cat(ctx: click.Context, key: str) -> None:
    """Write the bytes of KEY to standard output."""

    async def work(backend: StorageBackend) -> None:
        out = sys.stdout.buffer
        async for chunk in backend.stream(key):
            with writing():  # `file-storage cat big | head`: the reader is done (141)
                out.write(chunk)
        with writing():
            out.flush()

    run(ctx, work)


@app.command("get")
@click.argument("key")
@click.argument("local", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def get(ctx: click.Context, key: str, local: Path) -> None:
    """Download KEY to the local file LOCAL (written whole or not at all)."""

    async def work(backend: StorageBackend) -> None:
        with Bar(f"get {key}") as bar:
            await backend.download_file(key, local, progress=bar.update)

    run(ctx, work)


@app.command("put")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("key")
@click.option("--content-type", help="MIME type (default: guessed from KEY's extension).")
@click.pass_context
def put(ctx: click.Context, local: Path, key: str, content_type: str | None) -> None:
    """Upload the local file LOCAL to KEY, replacing any object there; print the key."""

    async def work(backend: StorageBackend) -> None:
        with Bar(f"put {key}") as bar:
            saved = await backend.upload_file(
                local, key, content_type=content_type, progress=bar.update
            )
        echo(printable(saved))

    run(ctx, work)


@app.command("rm")
@click.argument("keys", nargs=-1)
@click.option("--prefix", help="Delete every object under this folder instead.")
@click.option("--all", "everything", is_flag=True, help="Delete every object in the storage.")
@click.option("--yes", is_flag=True, help="Do not ask before deleting a prefix or everything.")
@click.pass_context
def rm(
    ctx: click.Context, keys: tuple[str, ...], prefix: str | None, everything: bool, yes: bool
) -> None:
    """Delete the objects KEYS (a missing key is no error), everything under --prefix, or
    everything with --all."""
    if sum((bool(keys), prefix is not None, everything)) != 1:
        raise click.UsageError("give one of KEYS, --prefix or --all", ctx)
    if prefix == "":
        # `rm --prefix "$DIR" --yes` with DIR unset must not empty the store
        raise click.UsageError("an empty --prefix would delete everything; say --all", ctx)
    if everything:
        prefix = ""
    if prefix is not None and not yes:
        if sys.stdin is None or not sys.stdin.isatty():  # None: standard input closed
            flag = "--all" if everything else "--prefix"
            raise click.UsageError(f"rm {flag} asks first; without a terminal, add --yes", ctx)
        where = f"under {prefix!r}" if prefix else "in the storage"
        click.confirm(f"Delete every object {where}?", abort=True, err=True)

    async def work(backend: StorageBackend) -> None:
        if prefix is None:
            await backend.delete_many(keys)
        else:
            deleted = await backend.delete_prefix(prefix)
            echo_err(f"deleted {deleted} objects")

    run(ctx, work)


@app.command("du")
@click.argument("prefix", default="")
@click.option("--json", "as_json", is_flag=True, help="A JSON object.")
@click.pass_context
def du(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """Count the objects and bytes under PREFIX (everything when omitted)."""

    async def work(backend: StorageBackend) -> None:
        count = size = 0
        async for info in backend.iter_files(prefix):
            count += 1
            size += info.size
        if as_json:
            emit_json({"prefix": prefix, "objects": count, "bytes": size})
        else:
            echo(f"{human(size)}\t{count} objects\t{printable(prefix) or '(all)'}")

    run(ctx, work)


@app.command("url")
@click.argument("key")
@click.option("--put", "put_", is_flag=True, help="A URL to upload with PUT (default: GET).")
@click.option(
    "--expires",
    type=click.IntRange(1, MAX_PRESIGN_SECONDS),
    default=3600,
    show_default=True,
    help="Seconds the URL stays valid.",
)
@click.pass_context
def url(ctx: click.Context, key: str, put_: bool, expires: int) -> None:
    """Print a presigned URL for KEY."""

    async def work(backend: StorageBackend) -> None:
        echo(await backend.get_presigned_url(key, expires, "PUT" if put_ else "GET"))

    run(ctx, work)


@app.command("expire")
@click.argument("prefix", required=False)
@click.argument("days", type=click.IntRange(min=1), required=False)
@click.option("--off", is_flag=True, help="Remove the rule of PREFIX.")
@click.option("--json", "as_json", is_flag=True, help="The rules as a JSON object.")
@click.pass_context
def expire(
    ctx: click.Context, prefix: str | None, days: int | None, off: bool, as_json: bool
) -> None:
    """Delete the objects under the folder PREFIX once they are DAYS days old.

    `expire PREFIX --off` removes the rule; `expire` alone prints the rules. On S3 the rule
    goes into the bucket's lifecycle configuration (S3 applies it); on local disk the
    application applies it with purge_expired().
    """
    if prefix is None:
        if days is not None or off:
            raise click.UsageError("give PREFIX with DAYS or --off", ctx)
    elif (days is None) == (not off):
        raise click.UsageError("give either DAYS or --off", ctx)

    async def work(backend: StorageBackend) -> None:
        if prefix is not None:
            await backend.set_expiration(prefix, None if off else days)
            if as_json:
                emit_json(await backend.get_expiration())
            return
        rules = await backend.get_expiration()
        if as_json:
            emit_json(rules)
            return
        for folder, count in rules.items():
            echo(f"{count:>6} days  {printable(folder) or '(all)'}")

    run(ctx, work)


@app.command("migrate")
@click.option(
    "--to-env",
    type=_run.EnvFile(),
    required=True,
    help="Env file with the destination's STORAGE_* settings (only that file is read).",
)
@click.option("--prefix", default="", help="Move only this folder.")
@click.option("--delete-source", is_flag=True, help="Delete each object once verified.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="One line per object on stderr.")
@click.option("--json", "as_json", is_flag=True, help="The report as a JSON object.")
@click.pass_context
def migrate_command(
    ctx: click.Context,
    to_env: Path,
    prefix: str,
    delete_source: bool,
    concurrency: int,
    verbose: bool,
    as_json: bool,
) -> None:
    """Copy every object to the storage --to-env describes; re-run to resume.

    Objects already there (written since, or the same size and MD5) are skipped. Exit 1
    when any object failed.
    """
    options = ctx.find_object(Options)
    assert options is not None
    with _run.errors(ctx, options):
        source_settings = _run.settings(options)
        dest_settings = _run.file_settings(to_env)
        if dest_settings.type == "MEMORY":
            # it lives in this process: every copy is gone when the command exits (and
            # --delete-source would have deleted the only ones)
            raise click.UsageError(
                f"{to_env} describes STORAGE_TYPE=MEMORY, which keeps nothing once this "
                "command exits: migrate to storage that lasts",
                ctx,
            )
        dest = create_storage_backend(dest_settings)

    async def work(source: StorageBackend) -> int:
        with MigrationBar(verbose) as bar:

            def progress(key: str, outcome: Outcome, report: MigrationReport) -> None:
                bar.update(key, outcome, report)

            async with dest:
                try:
                    report = await migrate(
                        source,
                        dest,
                        prefix,
                        concurrency=concurrency,
                        delete_source=delete_source,
                        progress=progress,
                    )
                except ValueError as exc:  # the same storage (migrate tells)
                    raise click.UsageError(str(exc), ctx) from None
        if as_json:
            emit_json(
                {
                    "copied": report.copied,
                    "skipped": report.skipped,
                    "failed": report.failed,
                    "bytes": report.bytes,
                }
            )
        else:
            echo(
                f"copied {report.copied}, skipped {report.skipped}, "
                f"failed {len(report.failed)}, {human(report.bytes)} written"
            )
        for key, reason in report.failed.items():
            echo_err(f"{_run.PROG}: failed {key}: {reason}")
        return 1 if report.failed else 0

    run(ctx, work, source_settings)
