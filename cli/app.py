"""The Typer app object, the shared console and the helpers every command uses."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperGroup

from genorder.errors import UserError

try:  # typer vendors click (typer._click) since 0.2x; older releases use click itself
    from typer._click import exceptions as _click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as _click_exceptions  # type: ignore[no-redef]


class _Group(TyperGroup):
    """The app's command group: a usage error (unknown option, missing or malformed value) is an
    `error:` line naming the command's --help, exit 2, like every other bad input (Typer's own
    rendering is a box with no `error:` line)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_exceptions.NoArgsIsHelpError as err:  # `genorder` alone: the help
            err.show()
            sys.exit(err.exit_code)
        except _click_exceptions.ClickException as err:
            ctx = getattr(err, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if isinstance(err, _click_exceptions.UsageError) and ctx else ""
            _print_error(f"{err.format_message()}{hint}")
            sys.exit(err.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_Group,
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
    """Turn `UserError` into red `error:` lines on stderr and its exit code (2 unless the error
    class sets `exit_code`); an OSError on a named path (unwritable, missing folder, a file where a
    folder is expected, disk full) the same way; Ctrl-C outside training into exit 130. Plugins
    that failed to load are reported first, as warning lines."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _warn_plugin_problems()
            return fn(*args, **kwargs)
        except UserError as err:
            _print_error(str(err))
            raise typer.Exit(code=getattr(err, "exit_code", 2)) from None
        except OSError as err:
            if err.filename is None and err.errno not in _USER_ERRNOS:
                raise
            where = f": {err.filename}" if err.filename is not None else ""
            _print_error(f"{err.strerror or err}{where}")
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            _print_error("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


_USER_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.EDQUOT}
_warned = False


def _print_error(message: str) -> None:
    """Each line of `message` as `error: line` (the text is escaped: "[order]" stays as written)."""
    for line in message.splitlines() or [""]:
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)


def _warn_plugin_problems() -> None:
    """One warning line per plugin that failed to load or clashed with a built-in name (once)."""
    global _warned
    if _warned:
        return
    _warned = True
    from genorder.registry import plugin_problems

    for p in plugin_problems():
        err_console.print(f"[yellow]warning:[/yellow] {escape(p.describe())}", highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str, total: int | None = None, disable: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields `update(done, total=None, **fields)` for library callbacks
    (`disable`: draw nothing, e.g. in the worker processes of `compare`)."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=console, transient=False, disable=disable) as prog:
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
