"""Option plumbing shared by commands: config layering, tokenizers, samplers, run loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genorder.config import build_config, load_toml, parse_overrides
from genorder.errors import UserError
from genorder.registry import registry
from genorder.sampler import Sampler
from genorder_cli.app import console, progress_bar

TOKENIZER_CACHE = Path("runs/tokenizers")


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """{"budget.steps": 5} -> {"budget": {"steps": 5}} (from `--set train.budget.steps=5`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        if not leaf or not all(parents):
            raise UserError(f"--set: {key!r} has an empty part; write section.key=value")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set: {key} conflicts with another value")
        if isinstance(node.get(leaf), dict):
            raise UserError(f"--set: {key} conflicts with another value")
        node[leaf] = value
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def layered(
    config: Path | None, overrides: list[str] | None, allowed: tuple[str, ...] | None = None
) -> dict[str, dict[str, Any]]:
    """TOML file sections, then `--set section.key=value` overrides on top (dotted keys nest:
    `--set train.budget.steps=5`). Every top-level entry must be a table; with `allowed`, a section
    (from the file or from `--set`) outside it is an error rather than silently ignored."""
    base = load_toml(config) if config else {}
    where = f" in {config}" if config else ""
    for section, value in base.items():
        if not isinstance(value, dict):
            raise UserError(f"config{where}: {section} = {value!r} must be a table ([{section}] with key = value lines)")
    for section, values in parse_overrides(overrides).items():
        if not isinstance(base.setdefault(section, {}), dict):
            raise UserError(f"config section {section!r} is not a table")
        base[section] = _merge(base[section], _nest(values))
    if allowed is not None:
        unknown = sorted(set(base) - set(allowed))
        if unknown:
            raise UserError(
                f"unknown config section(s) {', '.join(unknown)}{where} (from the file or --set); "
                f"this command reads {', '.join(f'[{a}]' for a in allowed)}"
            )
    return base


def default_tokenizer_preset(kind: str) -> str:
    return "msvq-fmnist" if kind == "multi-scale" else "vq-fmnist"


def make_sampler(sections: dict, **cli: Any) -> Sampler:
    opts = dict(sections.get("sampler", {}))
    name = opts.pop("name", "standard")
    cfg = build_config(registry("samplers").config_class(name), opts, cli, section="sampler")
    return registry("samplers").get(name)(cfg)


def resolve_tokenizer(
    spec: str | None,
    order,
    dataset_spec: str,
    dataset,
    device: torch.device,
    steps: int,
    minutes: float | None = None,
    may_train: bool = True,
):
    """A tokenizer checkpoint path, or a preset name (default: the order's kind) trained on the
    dataset first (for `steps`, capped at `minutes` when given) when no cached one exists.
    Returns (tokenizer, checkpoint stem)."""
    from genorder.runs import load_tokenizer

    if spec and (Path(spec).exists() or Path(spec + ".safetensors").exists() or Path(spec).suffix in (".json", ".safetensors")):
        tok, _ = load_tokenizer(spec, device)
        return tok, Path(spec).with_suffix("") if Path(spec).suffix else Path(spec)
    name = spec or default_tokenizer_preset(order.tokenizer_kind)
    registry("tokenizers").get(name)  # clear error for an unknown preset
    safe = dataset_spec.replace("/", "_").replace(":", "_")
    stem = TOKENIZER_CACHE / f"{name}-{safe}" / "tokenizer"
    if stem.with_suffix(".safetensors").exists():
        console.print(f"using the cached tokenizer [bold]{stem}[/bold]")
        tok, _ = load_tokenizer(stem, device)
        return tok, stem
    if not may_train:
        raise UserError(
            f"no trained tokenizer at {stem}: under torchrun, train it first in one process "
            f"(genorder train-tokenizer --tokenizer {name} --out {stem.parent}) or pass --tokenizer CKPT"
        )
    budget = {"steps": steps} if minutes is None else {"steps": steps, "minutes": minutes}
    cap = "" if minutes is None else f" or {minutes:g} minutes, whichever comes first"
    console.print(
        f"no tokenizer given: training [bold]{name}[/bold] on {dataset_spec} first ({steps} steps{cap}) -> {stem.parent}"
    )
    from genorder_cli.cmd_tokenizer import train_tokenizer_run

    m = train_tokenizer_run(name, dataset, stem.parent, budget, device=str(device), dataset_spec=dataset_spec)
    console.print(
        f"tokenizer {name}: {m['steps']} steps, {m['eval_split']} PSNR {m['psnr']:.2f} dB, "
        f"codes used at the last scale {m['usage_pct'][-1]:.0f}% (grid: {stem.parent / 'reconstructions.png'})"
    )
    tok, _ = load_tokenizer(stem, device)
    return tok, stem


def generate_with_bar(run, labels: torch.Tensor, sampler: Sampler, seed: int, batch_size: int, title: str) -> torch.Tensor:
    from genorder.sampling import generate_images

    with progress_bar(title) as update:
        return generate_images(run, labels, sampler, seed=seed, batch_size=batch_size,
                               progress=lambda d, t: update(d, t))
