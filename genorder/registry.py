"""Plugin manager and the registries (tokenizers, orders, samplers, datasets, importers).

    >>> from genorder.registry import registry
    >>> registry("orders").names()
    ['maskgit', 'next-scale', 'raster']
    >>> order = registry("orders").create("next-scale", {"cfg": 1.5})
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy
from pydantic import BaseModel

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
        """Validate `options` against the component's Config and instantiate it (a component that
        raises while doing so is a `PluginFailure` naming it and its plugin)."""
        cls = self.get(name)
        with self.blame(name, "configuring it"):
            cfg = build_config(cls.Config, options, section=self.kind[:-1])
        with self.blame(name, "creating it"):
            return cls(cfg, **kwargs)

    def plugin_of(self, name: str) -> str:
        """The plugin that registered `name` ("?" when the name is not registered)."""
        entry = self.entries.get(name)
        return entry.plugin if entry is not None else "?"

    @contextmanager
    def blame(self, name: str, what: str) -> Iterator[None]:
        """Run a component's own code: anything it raises (a `UserError` aside, which is already
        the user's message) becomes a `PluginFailure` naming the component and its plugin."""
        try:
            yield
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 -- the plugin's bug must not surface as our traceback
            raise PluginFailure(self.kind, name, self.plugin_of(name), what, err) from err


class PluginFailure(UserError):
    """A component raised in its own code (`Registry.blame`): one line naming it and its plugin."""

    def __init__(self, kind: str, name: str, plugin: str, what: str, err: BaseException) -> None:
        self.kind, self.name, self.plugin = kind, name, plugin
        if isinstance(err, (MemoryError, torch_oom())):
            detail = f"out of memory ({_error_text(err)}); try a smaller batch"
        else:
            detail = _error_text(err)
        super().__init__(f"{kind[:-1]} {name!r} (plugin {plugin}) failed while {what}: {detail}")


def torch_oom() -> type:
    """torch's out-of-memory error class (a RuntimeError subclass)."""
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


OWN_DISTRIBUTION = "genorder"  # the built-in components ship in this package's own distribution


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be used: `broken` (import or registration raised), `invalid` (it
    registered a bad name or a non-class) or `collision` (a component or plugin name already taken
    by a built-in, or by a plugin loaded before it)."""

    plugin: str
    distribution: str
    status: str  # "broken" | "collision" | "invalid" (one registration unusable; the plugin's others are kept)
    error: str

    def describe(self) -> str:
        what = {"broken": "failed to load and is skipped", "invalid": "registered an unusable component, which is skipped"
                }.get(self.status, "was not used")  # fmt: skip
        return f"plugin {self.plugin} ({self.distribution}) {what}: {self.error}"


def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# What a plugin may raise and still hurt only itself: everything but Ctrl-C (SystemExit from a
# `sys.exit` at import, GeneratorExit and other BaseException subclasses included).
def _is_interrupt(err: BaseException) -> bool:
    return isinstance(err, KeyboardInterrupt)


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # no ':' (NAME:ARG), ',' (lists) or spaces


def registration_problem(kind: str, name: object, cls: object) -> str | None:
    """Why `register(name, cls)` cannot be used (None when it can): the name must be a plain
    string usable on the command line and `cls` a class whose `Config` is a pydantic model."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return f"{kind[:-1]} name {name!r} is not a valid name (letters, digits, _ . + -; no ':' ',' or spaces)"
    if not isinstance(cls, type):
        return f"{kind[:-1]} {name!r} is registered as {type(cls).__name__} {_short_repr(cls)}, not a class"
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        return f"{kind[:-1]} {name!r} ({cls.__name__}) has no Config class (a genorder.config.ComponentConfig subclass)"
    return None


def _short_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 -- a repr that raises is the plugin's problem, not ours
        text = "?"
    return text if len(text) <= 40 else text[:37] + "..."


def load_entry_points(pm: pluggy.PluginManager, problems: list[PluginProblem]) -> set[str]:
    """Load every `genorder` entry point on its own (pluggy's loader is all-or-nothing): one that
    raises becomes a `broken` problem and the others still load. Built-ins (this distribution's)
    load first, so a third-party plugin cannot take their names. Returns the built-in plugin names."""
    builtin: set[str] = set()
    eps = list(importlib.metadata.entry_points(group="genorder"))
    eps.sort(key=lambda ep: ((ep.dist.name if ep.dist else "") != OWN_DISTRIBUTION, ep.name, ep.value))
    for ep in eps:
        dist = ep.dist.name if ep.dist else "?"
        if pm.is_blocked(ep.name):
            continue
        if pm.has_plugin(ep.name):
            problems.append(PluginProblem(ep.name, dist, "collision", f"plugin name {ep.name!r} is already taken"))
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except BaseException as err:  # a broken plugin must not stop the others (sys.exit included)
            if _is_interrupt(err):
                raise
            problems.append(PluginProblem(ep.name, dist, "broken", _error_text(err)))
            continue
        if dist == OWN_DISTRIBUTION:
            builtin.add(ep.name)
    return builtin


def make_plugin_manager(load_entrypoints: bool = True, problems: list[PluginProblem] | None = None) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("genorder")
    pm.add_hookspecs(hookspecs)
    if load_entrypoints:
        load_entry_points(pm, problems if problems is not None else [])
    return pm


def collect(
    pm: pluggy.PluginManager,
    problems: list[PluginProblem] | None = None,
    builtin: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Registry]:
    """Ask every plugin to register its components; returns kind -> Registry.

    With `problems` given, a plugin whose hook raises is recorded as `broken` (none of its
    registrations for that kind are kept) and a name already registered is recorded as a
    `collision` (the built-in, or the first plugin, keeps it); without it, both raise UserError."""
    regs = {k: Registry(k) for k in KINDS}
    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        impls = hook.get_hookimpls()
        names = [pm.get_name(impl.plugin) or getattr(impl.plugin, "__name__", "?") for impl in impls]
        order = sorted(range(len(impls)), key=lambda i: (names[i] not in builtin, i))
        for i in order:
            impl, plugin = impls[i], names[i]
            staged: list[tuple[str, type]] = []
            try:
                impl.function(register=lambda n, c, _s=staged: _s.append((n, c)))
            except BaseException as err:
                if problems is None or _is_interrupt(err):
                    raise
                problems.append(PluginProblem(plugin, _distribution(plugin), "broken",
                                              f"register_{kind} raised {_error_text(err)}"))  # fmt: skip
                continue
            for name, cls in staged:
                bad = registration_problem(kind, name, cls)
                if bad is not None:
                    if problems is None:
                        raise UserError(f"plugin {plugin}: {bad}")
                    problems.append(PluginProblem(plugin, _distribution(plugin), "invalid", bad))
                    continue
                if name in regs[kind].entries and problems is not None:
                    other = regs[kind].entries[name].plugin
                    problems.append(PluginProblem(plugin, _distribution(plugin), "collision",
                                                  f"{kind[:-1]} name {name!r} is already registered by {other}, which keeps it"))  # fmt: skip
                    continue
                regs[kind].add(name, cls, plugin)
    return regs


def _distribution(plugin: str) -> str:
    for ep_name, _, dist in plugin_distributions():
        if ep_name == plugin:
            return dist
    return "?"


@cache
def _default() -> tuple[dict[str, Registry], tuple[PluginProblem, ...], frozenset[str]]:
    problems: list[PluginProblem] = []
    pm = make_plugin_manager(load_entrypoints=False)
    builtin = load_entry_points(pm, problems)
    regs = collect(pm, problems, builtin)
    return regs, tuple(problems), frozenset(builtin)


def registry(kind: str) -> Registry:
    """The process-wide registry of `kind`, built from the installed entry points on first use."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return _default()[0][kind]


def builtin_names(kind: str) -> list[str]:
    """Names of `kind` registered by genorder's own built-in plugins (the defaults of `compare`),
    leaving out components that declare `compare_default = False` (e.g. the orders added after the
    VAR paper's three: `compare --orders all` runs them, see `expand_orders`)."""
    _, _, builtin = _default()
    reg = registry(kind)
    return [
        n for n in reg.names()
        if reg.entries[n].plugin in builtin and getattr(reg.entries[n].cls, "compare_default", True)
    ]


ALL = "all"


def expand_orders(spec: str | None) -> list[str]:
    """The orders a `--orders` value means: None -> the default ones (`builtin_names`); "all" ->
    every registered order (built-in and third-party, sorted); otherwise the comma-separated names,
    each checked against the registry (UserError for an unknown or empty one), duplicates dropped."""
    if spec is None:
        return builtin_names("orders")
    if spec.strip() == ALL:
        return registry("orders").names()
    names = [n.strip() for n in spec.split(",")]
    if not any(names) or not all(names):
        raise UserError(f"--orders {spec!r}: give comma-separated order names, or {ALL!r}")
    for n in names:
        registry("orders").get(n)  # unknown -> UserError naming the available ones
    return list(dict.fromkeys(names))


def plugin_problems() -> list[PluginProblem]:
    """Plugins that failed to load or lost a name clash while the registries were built (the CLI
    prints them as warnings and lists them in `genorder plugins`)."""
    return list(_default()[1])


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
