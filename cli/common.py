"""Option plumbing shared by commands: config layering, tokenizers, samplers, run loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from genorder.config import load_toml, parse_overrides
from genorder.errors import UserError
from genorder.sampler import Sampler
from genorder.training_run import is_checkpoint_spec, make_sampler, tokenizer_stem  # noqa: F401 - the library's, re-exported
from genorder_cli.app import console, progress_bar

TOKENIZER_CACHE = Path("runs/tokenizers")

# -- options every data command shares (train, compare, sample, eval, train-tokenizer, ...) -----------
THREADS_HELP = "CPU threads for torch (default: torch's choice); 1 is often several times faster on a shared CPU"
TOKENIZER_HELP = (
    "a tokenizer preset (trained on the dataset first), a run or tokenizer folder, or a checkpoint file; "
    "default: the preset declared for the order's kind and the dataset's channels and size"
)
ThreadsOpt = Annotated[Optional[int], typer.Option(help=THREADS_HELP)]
ImageSizeOpt = Annotated[
    Optional[int], typer.Option("--image-size", help="resize the dataset's images to N x N px (an explicit conversion)")
]
TokenizerOpt = Annotated[Optional[str], typer.Option(help=TOKENIZER_HELP)]


def set_threads(threads: int | None) -> None:
    """`--threads N`: torch's intra-op threads for this process (None: leave torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


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


def default_tokenizer_preset(kind: str, channels: int = 1, image_size: int = 32) -> str:
    """The preset declared (`Tokenizer.default_for`) for an order kind and the dataset's shape."""
    from genorder.tokenizer_training import default_tokenizer

    return default_tokenizer(kind, channels, image_size)


def tokenizer_cache_entry(name: str, dataset_spec: str, dataset, budget: dict[str, Any],
                          train_opts: dict[str, Any] | None = None,
                          tokenizer_opts: dict[str, Any] | None = None) -> tuple[Path, str]:
    """(folder, key) of the cached tokenizer `name` trained on `dataset` under `budget` with
    `train_opts`: TOKENIZER_CACHE/<preset>-<dataset>-<short key>, the key hashing the preset's
    config, the budget, the training options and the dataset's content (not its path)."""
    from genorder.classifier import dataset_label
    from genorder.hashing import config_fingerprint, dataset_fingerprint, short
    from genorder.tokenizer_training import training_identity

    # every default filled in: `train` and `compare` asking for the same training share the entry
    key = config_fingerprint({**training_identity(name, tokenizer_opts, budget, train_opts),
                              "dataset": dataset_fingerprint(dataset)})
    return TOKENIZER_CACHE / f"{name}-{dataset_label(dataset_spec)}-{short(key)}", key


def _cached_tokenizer(folder: Path, key: str) -> dict[str, Any] | None:
    """The metrics of the tokenizer cached in `folder` when its key and its tensors' hash still
    match what was recorded when it was trained; None otherwise (then it is retrained)."""
    import json

    from genorder.checkpoint import load_checkpoint
    from genorder.hashing import tensors_fingerprint

    try:
        record = json.loads((folder / "cache.json").read_text())
        state, _ = load_checkpoint(folder / "tokenizer")
    except (OSError, ValueError, UserError):
        return None
    if record.get("key") != key or record.get("tensors") != tensors_fingerprint(state):
        return None
    return record.get("metrics", {})


def resolve_tokenizer(
    spec: str | None,
    order,
    dataset_spec: str,
    dataset,
    device: torch.device,
    steps: int,
    minutes: float | None = None,
    may_train: bool = True,
    options: dict[str, Any] | None = None,
    train_opts: dict[str, Any] | None = None,
    quiet: bool = False,
    tokenizer_opts: dict[str, Any] | None = None,
):
    """A tokenizer checkpoint (file, stem, or a run / tokenizer folder), or a preset name (default:
    the preset declared for the order's kind and the dataset's shape) trained on the dataset first
    (for `steps`, capped at `minutes` when given; `train_opts` such as lr and batch_size) unless the
    content-keyed cache holds one (`tokenizer_cache_entry`). `options` / `tokenizer_opts`
    (`--set tokenizer.*`) configure the preset, whose channels and size default to the dataset's.
    Returns (tokenizer, checkpoint stem)."""
    import json

    from genorder.checkpoint import atomic_write, load_checkpoint
    from genorder.hashing import tensors_fingerprint
    from genorder.runs import load_tokenizer
    from genorder.tokenizer_training import check_preset_for_order, configure_for_dataset

    options = {**(options or {}), **(tokenizer_opts or {})}
    if spec and is_checkpoint_spec(spec):
        if options:
            raise UserError(f"--set tokenizer.* configures a preset; {spec} is a trained checkpoint")
        stem = tokenizer_stem(spec)
        tok, _ = load_tokenizer(stem, device)
        return tok, stem
    name, options = configure_for_dataset(spec, order.tokenizer_kind, dataset.channels, dataset.image_size, options,
                                          device=device.type)
    check_preset_for_order(order, name, options)  # a preset that cannot serve the order: an error before training it
    budget = {"steps": steps} if minutes is None else {"steps": steps, "minutes": minutes}
    folder, key = tokenizer_cache_entry(name, dataset_spec, dataset, budget, train_opts, options)
    stem = folder / "tokenizer"
    cached = _cached_tokenizer(folder, key)
    if cached is not None:
        if not quiet:
            psnr = cached.get("psnr")
            console.print(
                f"using the cached tokenizer [bold]{stem}[/bold] ({cached.get('steps')} steps, "
                f"{cached.get('eval_split', 'test')} PSNR {'?' if psnr is None else f'{psnr:.2f}'} dB)"
            )
        tok, _ = load_tokenizer(stem, device)
        return tok, stem
    if not may_train:
        raise UserError(
            f"no trained tokenizer at {stem}: under torchrun, train it first in one process "
            f"(genorder train-tokenizer --tokenizer {name} --out {stem.parent}) or pass --tokenizer CKPT"
        )
    cap = "" if minutes is None else f" or {minutes:g} minutes, whichever comes first (load-dependent)"
    if not quiet:
        console.print(
            f"no tokenizer given: training [bold]{name}[/bold] on {dataset_spec} first ({steps} steps{cap}) -> {folder}"
        )
    from genorder_cli.cmd_tokenizer import train_tokenizer_run

    m = train_tokenizer_run(name, dataset, folder, budget, device=str(device), dataset_spec=dataset_spec,
                            train_opts=train_opts, tokenizer_opts=options, quiet=quiet)  # fmt: skip
    state, _ = load_checkpoint(stem)
    record = {"key": key, "tensors": tensors_fingerprint(state), "preset": name, "dataset": dataset_spec,
              "budget": budget, "train": train_opts or {}, "tokenizer": options, "metrics": m}  # fmt: skip
    atomic_write(folder / "cache.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str)))
    if not quiet:
        console.print(
            f"tokenizer {name}: {m['steps']} steps, {m['eval_split']} PSNR {m['psnr']:.2f} dB, "
            f"codes used at the last scale {m['usage_pct'][-1]:.0f}% (grid: {folder / 'reconstructions.png'})"
        )
    tok, _ = load_tokenizer(stem, device)
    return tok, stem


def with_tokenizer(run, spec: str | None, device: torch.device):
    """`sample/eval --run DIR --tokenizer CKPT`: decode the run's tokens with another checkpoint
    (a file, or a tokenizer or run folder) of the same scales and codebook size, e.g. a tokenizer
    trained longer; None keeps the run's own copy."""
    if spec is None:
        return run
    from dataclasses import replace

    from genorder.runs import load_tokenizer

    if not is_checkpoint_spec(spec):
        raise UserError(f"--tokenizer {spec}: with --run, give a trained tokenizer checkpoint or folder")
    tok, _ = load_tokenizer(tokenizer_stem(spec), device)
    own = run.tokenizer
    if (tuple(tok.scales), tok.codebook_size) != (tuple(own.scales), own.codebook_size):
        raise UserError(f"--tokenizer {spec}: scales {tuple(tok.scales)} and V {tok.codebook_size} differ from the "
                        f"run's tokenizer ({tuple(own.scales)}, V {own.codebook_size})")  # fmt: skip
    return replace(run, tokenizer=tok)


def generate_with_bar(run, labels: torch.Tensor, sampler: Sampler, seed: int, batch_size: int, title: str,
                      quiet: bool = False) -> torch.Tensor:
    from genorder.sampling import generate_images

    with progress_bar(title, disable=quiet) as update:
        return generate_images(run, labels, sampler, seed=seed, batch_size=batch_size,
                               progress=lambda d, t: update(d, t))
