"""`genorder plugins`: every registered component, and which plugin registered it."""

from __future__ import annotations

import importlib.metadata
import inspect

from genorder_cli.app import app, console, guarded
from rich.table import Table

from genorder.registry import KINDS, plugin_distributions, plugin_problems, registry


def first_doc_line(cls: type) -> str:
    """The first paragraph of the class's own docstring, on one line ("" when it has none)."""
    doc = cls.__dict__.get("__doc__") or ""
    return " ".join(inspect.cleandoc(doc).split("\n\n", 1)[0].split())


def distribution_of(plugin: str, module: str) -> str | None:
    """The installed distribution behind a plugin: from its entry point, else from its module."""
    for ep_name, _, dist in plugin_distributions():
        if ep_name == plugin:
            return dist
    dists = importlib.metadata.packages_distributions().get(module.split(".")[0])
    return dists[0] if dists else None


def plugin_label(plugin: str, cls: type) -> str:
    """`plugin (distribution)`, or just `plugin` when they match or the distribution is unknown."""
    dist = distribution_of(plugin, cls.__module__)
    return plugin if dist in (None, plugin) else f"{plugin} ({dist})"


@app.command("plugins")
@guarded
def plugins() -> None:
    """List every registered tokenizer, order, sampler and dataset, with the plugin behind it, then
    the plugins that could not be used (broken, or a name clash), with their error."""
    table = Table(title="genorder components")
    table.add_column("kind", style="cyan")
    table.add_column("name", style="bold")
    table.add_column("plugin (distribution)")
    table.add_column("description")
    for kind in KINDS:
        reg = registry(kind)
        for name in reg.names():
            entry = reg.entries[name]
            table.add_row(
                kind[:-1], name, plugin_label(entry.plugin, entry.cls), first_doc_line(entry.cls)
            )
    console.print(table)
    problems = plugin_problems()
    if problems:
        bad = Table(title="plugins not used")
        bad.add_column("plugin (distribution)", style="bold")
        bad.add_column("status", style="red")
        bad.add_column("error")
        for p in problems:
            bad.add_row(p.plugin if p.distribution in ("?", p.plugin) else f"{p.plugin} ({p.distribution})", p.status, p.error)
        console.print(bad)
