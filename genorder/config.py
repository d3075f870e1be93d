"""Pydantic configuration shared by every component.

Each component (tokenizer, order, sampler, backbone, trainer, dataset) owns exactly one config class,
a subclass of `ComponentConfig` (`extra="forbid"`, frozen). Configs are validated once, at the
boundary (`build_config`), and then passed around whole; library code never reads the command line.

TOML files hold a table per component::

    [tokenizer]          # section names are free; the CLI knows which section feeds which component
    name = "msvq-fmnist"
    [order]
    name = "next-scale"
    [backbone]
    depth = 8
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from genorder.errors import UserError

C = TypeVar("C", bound=BaseModel)


class ComponentConfig(BaseModel):
    """Base class of every component config: unknown keys are errors, instances are immutable."""

    # allow_inf_nan=False: `lr = inf` or `cfg = nan` is a bad value, not a number (every float field)
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One `field: message` line per problem, e.g. `backbone.depth: Input should be greater than 0`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "config")  # a whole-config check
        lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def prune_none(d: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value is None, so unset CLI options never override component defaults."""
    return {k: v for k, v in d.items() if v is not None}


def build_config(cls: type[C], *layers: dict[str, Any] | None, section: str = "") -> C:
    """Validate `cls` from dict layers merged left to right (TOML, then CLI overrides).

    Raises `UserError` with `section.field: message` lines when a value is bad.
    """
    prefix = f"{section}." if section else ""
    merged: dict[str, Any] = {}
    pruned = [prune_none(layer) for layer in layers if layer]
    for layer in pruned:
        merged.update(layer)
    try:
        config = cls.model_validate(merged)
    except ValidationError as err:
        raise UserError(format_validation_error(err, prefix)) from None
    _check_overridden(cls, pruned, merged, prefix)
    return config


def _check_overridden(cls: type[BaseModel], layers: list[dict[str, Any]], merged: dict[str, Any], prefix: str) -> None:
    """A value a later layer overrides must still be valid on its own: a bad `lr = -1` in a TOML
    file is an error even when `--lr` replaces it, not silently dropped. Each layer's overridden
    keys are validated in the final config's context; only errors on those keys count."""
    problems = []
    for i, layer in enumerate(layers):
        later = set().union(*(layers[j].keys() for j in range(i + 1, len(layers))))
        hidden = {k: v for k, v in layer.items() if k in later and merged.get(k) is not v}
        if not hidden:
            continue
        try:
            cls.model_validate({**merged, **hidden})
        except ValidationError as err:
            for e in err.errors():
                if e["loc"] and e["loc"][0] in hidden:
                    loc = ".".join(str(p) for p in e["loc"])
                    problems.append(f"{prefix}{loc}: {e['msg']} (in a setting that a later option overrides; fix or remove it)")
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)))


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a `UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{p}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{p}: not a TOML file (it is not UTF-8 text)") from None


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """Parse CLI `--set section.key=value` overrides; values are parsed as TOML scalars/arrays."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--set expects section.key=value, got {item!r}")
        key, raw = item.split("=", 1)
        section, field = key.split(".", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word such as a name
        out.setdefault(section, {})[field] = value
    return out


def nest_keys(values: dict[str, Any], section: str = "") -> dict[str, Any]:
    """{"budget.steps": 5} -> {"budget": {"steps": 5}} (the keys of `--set SECTION.budget.steps=5`);
    an empty part or a key that is both a value and a table is an error naming `section.key`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{section}.{key}" if section else key
        *parents, leaf = key.split(".")
        if not leaf or not all(parents):
            raise UserError(f"--set: {name} has an empty part; write section.key=value")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set: {name} conflicts with another value")
        if isinstance(node.get(leaf), dict):
            raise UserError(f"--set: {name} conflicts with another value")
        node[leaf] = value
    return out


def nest_overrides(parsed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`parse_overrides`' {section: {"a.b": v}} -> {section: {"a": {"b": v}}}."""
    return {section: nest_keys(values, section) for section, values in parsed.items()}
