"""The producer's rich progress bar, shared by its commands and the demo."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Progress goes to stderr; results (summaries, reports) to stdout.
progress_console = Console(stderr=True)


@dataclass(frozen=True)
class Bar:
    progress: Progress
    task: TaskID

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def set_total(self, total: int | None) -> None:
        self.progress.update(self.task, total=total)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Bar]:
    """A bar on stderr; with no total it counts without a bar's end."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=progress_console) as progress:
        yield Bar(progress, progress.add_task(description, total=total))
