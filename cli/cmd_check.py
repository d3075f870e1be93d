"""`genorder check NAME`: run the plugin contracts and equivalence checks of `genorder.testing`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from genorder_cli.app import app, console, guarded, progress_bar
from genorder_cli.common import ThreadsOpt, set_threads

STYLE = {"passed": "green", "failed": "bold red", "n/a": "dim"}


@app.command("check")
@guarded
def check(
    name: Annotated[Optional[str], typer.Argument(help="a registered component, or a plugin's entry-point / module / distribution name (default: everything registered)")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Check a plugin against the contracts every order, tokenizer, sampler and dataset must keep
    (docs/PLUGINS.md): shapes, losses, generation, cached = uncached tokens, the static and compiled
    step paths, counted FLOPs, tokenizer round trips and training. Exit code 1 when a check fails.
    The same checks run under pytest: pytest --pyargs genorder.testing --genorder-plugin NAME."""
    from genorder.testing.contracts import run_checks, select

    set_threads(threads)
    select(name)  # an unknown name: a clear error before anything runs
    with progress_bar(f"check {name or 'everything'}") as update:
        results = run_checks(name, progress=lambda d, t, what: update(d, t, info=what))
    t = Table(title=f"genorder check {name or ''}".strip())
    for col in ("component", "check", "result", "detail"):
        t.add_column(col, overflow="fold")
    for r in results:
        t.add_row(f"{r.kind[:-1]} {r.component}", r.check, f"[{STYLE[r.status]}]{r.status}[/]", r.message)
    console.print(t)
    failed = [r for r in results if r.status == "failed"]
    passed = sum(r.status == "passed" for r in results)
    console.print(f"{passed} passed, {len(failed)} failed, {len(results) - passed - len(failed)} not applicable")
    if failed:
        raise typer.Exit(code=1)
