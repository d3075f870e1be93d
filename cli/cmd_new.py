"""`genorder new-order NAME`: write the skeleton of an order plugin package (`genorder.scaffold`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genorder.scaffold import package_names, write_order_package
from genorder_cli.app import app, console, guarded

Opt = typer.Option


@app.command("new-order")
@guarded
def new_order(
    name: Annotated[str, typer.Argument(help="the order's registry name: lower-case letters, digits and hyphens (e.g. zigzag)")],
    out: Annotated[Path, Opt(help="folder to create genorder-NAME/ in")] = Path("."),
) -> None:
    """Write genorder-NAME/: pyproject.toml with the `genorder` entry point, a package registering
    a working order NAME (row-major next-token prediction with a KV cache, to change into yours),
    its test and a README. It passes `genorder check NAME` once installed (pip install -e)."""
    target = write_order_package(name, out)
    names = package_names(name)
    console.print(f"wrote {target}/ (pyproject.toml, {names['module']}/__init__.py, {names['module']}/order.py, tests/, README.md)")
    console.print(f"next: pip install -e {target} && genorder check {name}")
