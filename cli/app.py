"""The Typer app object, the shared console and the helpers every command uses."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genorder.errors import UserError

app = typer.Typer(
    name="genorder",
    help="Train and compare image generation orders (every registered one: see `genorder plugins`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Output piped to a file or a CI log gets 140 columns, not rich's 80, so that tables stay readable;
# COLUMNS still wins when set.
_PIPE_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140
console = Console(stderr=False, width=_PIPE_WIDTH)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn `UserError` into red `error:` lines on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            for line in str(err).splitlines() or [""]:
                err_console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields `update(done, total=None, **fields)` for library callbacks."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console, transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def update(done: int, total: int | None = None, info: str = "") -> None:
            prog.update(task, completed=done, total=total if total is not None else prog.tasks[0].total, info=info)

        yield update


def parse_csv(value: str | None, cast: Callable[[str], Any] = str) -> list[Any]:
    if not value:
        return []
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"could not parse list {value!r}") from None
