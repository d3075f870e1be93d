"""Option plumbing shared by commands: config layering, tokenizers, samplers, run loading."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from genorder.config import load_toml, nest_keys, parse_overrides
from genorder.errors import UserError
from genorder.sampler import Sampler
from genorder.training_run import is_checkpoint_spec, make_sampler, tokenizer_stem  # noqa: F401 - the library's, re-exported
from genorder.tokenizer_run import (  # noqa: F401 - the library's, re-exported
    TOKENIZER_CACHE,
    _cached_tokenizer,
    default_tokenizer_preset,
    resolve_tokenizer,
    tokenizer_cache_entry,
)
from genorder_cli.app import console, progress_bar


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
HOLDOUT_HELP = (
    "an image folder without train/ and test/: the fraction of each class held out as the test split "
    "(seeded, class-balanced; default 0.1, or $GENORDER_HOLDOUT); 0 turns it off, and the scores are then "
    "taken on training images"
)
HoldoutOpt = Annotated[Optional[float], typer.Option("--holdout", help=HOLDOUT_HELP)]


def set_threads(threads: int | None) -> None:
    """`--threads N`: torch's intra-op threads for this process (None: leave torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


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
        base[section] = _merge(base[section], nest_keys(values, section))
    if allowed is not None:
        unknown = sorted(set(base) - set(allowed))
        if unknown:
            raise UserError(
                f"unknown config section(s) {', '.join(unknown)}{where} (from the file or --set); "
                f"this command reads {', '.join(f'[{a}]' for a in allowed)}"
            )
    return base


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


def stage_renderers(stack: ExitStack) -> dict:
    """The library's `on_message` / `on_progress` / `on_status` callbacks drawn with rich: notes as
    lines, one bar per stage (the previous one ends where the next begins), statuses as spinners
    (after the bars end: rich draws one live display at a time). The bars end with `stack`."""
    bars: dict[str, Any] = {}

    def end_bars() -> None:
        stack.close()
        bars.clear()

    def on_progress(stage: str, done: float, total: float | None, info: str = "") -> None:
        n = None if total is None else int(total)
        if stage not in bars:
            end_bars()
            bars[stage] = stack.enter_context(progress_bar(stage, total=n))
        bars[stage](int(done), n, info=info)

    def on_status(text: str):
        end_bars()
        return console.status(text)

    return {"on_message": lambda text: console.print(text, highlight=False, markup=False),
            "on_progress": on_progress, "on_status": on_status}
