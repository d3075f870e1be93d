"""Plugin manager and the registries (tokenizers, orders, samplers, datasets, importers).

    >>> from genorder.registry import registry
    >>> registry("orders").names()
    ['maskgit', 'next-scale', 'raster']
    >>> order = registry("orders").create("next-scale", {"cfg": 1.5})
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from genorder import hookspecs
from genorder.config import build_config
from genorder.errors import UserError

KINDS = ("tokenizers", "orders", "samplers", "datasets", "importers")


@dataclass
class Entry:
    name: str
    cls: type
    plugin: str  # the distribution / module that registered it


@dataclass
class Registry:
    """Name -> component class for one kind. Duplicate names are errors."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, name: str, cls: type, plugin: str) -> None:
        if name in self.entries:
            other = self.entries[name].plugin
            raise UserError(
                f"duplicate {self.kind[:-1]} name {name!r}: registered by {other} and by {plugin}"
            )
        self.entries[name] = Entry(name, cls, plugin)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self.entries if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> type:
        if name not in self.entries:
            avail = ", ".join(self.names()) or "(none)"
            raise UserError(f"unknown {self.kind[:-1]} {name!r}; available: {avail}")
        return self.entries[name].cls

    def config_class(self, name: str) -> type:
        return self.get(name).Config

    def create(self, name: str, options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Validate `options` against the component's Config and instantiate it."""
        cls = self.get(name)
        cfg = build_config(cls.Config, options, section=self.kind[:-1])
        return cls(cfg, **kwargs)


def make_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("genorder")
    pm.add_hookspecs(hookspecs)
    if load_entrypoints:
        pm.load_setuptools_entrypoints("genorder")
    return pm


def collect(pm: pluggy.PluginManager) -> dict[str, Registry]:
    """Ask every plugin to register its components; returns kind -> Registry."""
    regs = {k: Registry(k) for k in KINDS}
    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            plugin = pm.get_name(impl.plugin) or getattr(impl.plugin, "__name__", "?")
            impl.function(register=lambda n, c, _k=kind, _p=plugin: regs[_k].add(n, c, _p))
    return regs


@cache
def _default() -> dict[str, Registry]:
    return collect(make_plugin_manager())


def registry(kind: str) -> Registry:
    """The process-wide registry of `kind`, built from the installed entry points on first use."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return _default()[kind]


def reset() -> None:
    """Forget the cached registries (tests that install plugins at run time call this)."""
    _default.cache_clear()


def plugin_distributions() -> list[tuple[str, str, str]]:
    """(entry point name, module, distribution) for every `genorder` entry point installed."""
    out = []
    for ep in importlib.metadata.entry_points(group="genorder"):
        dist = ep.dist.name if ep.dist else "?"
        out.append((ep.name, ep.value, dist))
    return sorted(out)
