"""Progress on stderr: rich bars on a terminal only, nothing (or plain lines) elsewhere."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Self

from file_storage.cli._run import echo_err, human, on_terminal

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from file_storage._migrate import MigrationReport, Outcome


class _Shown:
    """A rich Progress with one task, started only when stderr is a terminal."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def _start(self, bar: Progress, label: str) -> None:
        self.bar = bar
        bar.start()
        self.task = bar.add_task(label, total=None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.stop()


class Bar(_Shown):
    """A byte progress bar for one transfer (``get``, ``put``)."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self._label = label

    def __enter__(self) -> Self:
        if on_terminal():
            # imported here: rich costs its import only when a bar is shown
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
            bar = Progress(*columns, TransferSpeedColumn(), console=Console(stderr=True))
            self._start(bar, self._label)
        return self

    def update(self, done: int, total: int | None) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done, total=total)


class MigrationBar(_Shown):
    """Objects settled so far (a spinner with counts), and ``-v`` lines per object."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self._verbose = verbose

    def __enter__(self) -> Self:
        if on_terminal():
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            self._start(Progress(*columns, console=Console(stderr=True)), "migrate")
        return self

    def update(self, key: str, outcome: Outcome, report: MigrationReport) -> None:
        if self._verbose:
            # one line per object as it settles: a script (or a test) can follow along
            echo_err(f"{outcome} {key}")
        if self.bar is not None and self.task is not None:
            text = (
                f"copied {report.copied}, skipped {report.skipped}, "
                f"failed {len(report.failed)}, {human(report.bytes)}"
            )
            self.bar.update(self.task, description=text)
