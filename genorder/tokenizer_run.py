"""Training a tokenizer preset into a folder, and resolving the tokenizer a run uses: a trained
checkpoint, or a preset trained on the dataset first unless the content-keyed cache
(runs/tokenizers) holds it. Prints nothing: `on_message(text)` gets the one-line notes and
`on_progress(stage, done, total, info)` the training progress (stage "train <preset>", steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from genorder.budget import Budget
from genorder.config import build_config
from genorder.data import load_dataset
from genorder.errors import UserError
from genorder.registry import registry
from genorder.training_run import is_checkpoint_spec, tokenizer_stem

OnMessage = Callable[[str], None]
OnProgress = Callable[[str, float, "float | None", str], None]  # (stage, done, total, info)

TOKENIZER_CACHE = Path("runs/tokenizers")
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_KIND = "multi-scale"  # with no preset: the multi-scale preset declared for the dataset
# With no budget given: 300 steps, and no wall-clock cap (a cap stops a run at a point that depends on
# the machine's load: on a loaded 2-core CPU a 64 px colour folder stopped at 7 of 300 steps). A
# `minutes` budget stays available and is flagged as load-dependent.
DEFAULT_BUDGET = {"steps": 300}


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
    on_message: OnMessage | None = None,
    on_progress: OnProgress | None = None,
):
    """A tokenizer checkpoint (file, stem, or a run / tokenizer folder), or a preset name (default:
    the preset declared for the order's kind and the dataset's shape) trained on the dataset first
    (for `steps`, capped at `minutes` when given; `train_opts` such as lr and batch_size) unless the
    content-keyed cache holds one (`tokenizer_cache_entry`). `options` / `tokenizer_opts`
    (`--set tokenizer.*`) configure the preset, whose channels and size default to the dataset's.
    `on_message` / `on_progress`: see the module's doc (neither is called with `quiet`).
    Returns (tokenizer, checkpoint stem)."""
    from genorder.checkpoint import atomic_write, load_checkpoint
    from genorder.hashing import tensors_fingerprint
    from genorder.runs import load_tokenizer
    from genorder.tokenizer_training import check_preset_for_order, configure_for_dataset

    say = (lambda text: None) if quiet or on_message is None else on_message
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
        psnr = cached.get("psnr")
        say(f"using the cached tokenizer {stem} ({cached.get('steps')} steps, "
            f"{cached.get('eval_split', 'test')} PSNR {'?' if psnr is None else f'{psnr:.2f}'} dB)")
        tok, _ = load_tokenizer(stem, device)
        return tok, stem
    if not may_train:
        raise UserError(
            f"no trained tokenizer at {stem}: under torchrun, train it first in one process "
            f"(genorder train-tokenizer --tokenizer {name} --out {stem.parent}) or pass --tokenizer CKPT"
        )
    cap = "" if minutes is None else f" or {minutes:g} minutes, whichever comes first (load-dependent)"
    say(f"no tokenizer given: training {name} on {dataset_spec} first ({steps} steps{cap}) -> {folder}")
    m = train_tokenizer_run(name, dataset, folder, budget, device=str(device), dataset_spec=dataset_spec,
                            train_opts=train_opts, tokenizer_opts=options, quiet=quiet,
                            on_message=on_message, on_progress=on_progress)  # fmt: skip
    state, _ = load_checkpoint(stem)
    record = {"key": key, "tensors": tensors_fingerprint(state), "preset": name, "dataset": dataset_spec,
              "budget": budget, "train": train_opts or {}, "tokenizer": options, "metrics": m}  # fmt: skip
    atomic_write(folder / "cache.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str)))
    say(f"tokenizer {name}: {m['steps']} steps, {m['eval_split']} PSNR {m['psnr']:.2f} dB, "
        f"codes used at the last scale {m['usage_pct'][-1]:.0f}% (grid: {folder / 'reconstructions.png'})")
    tok, _ = load_tokenizer(stem, device)
    return tok, stem


def _dataset_spec(dataset) -> str | None:
    """Best-effort "name[:arg]" of a loaded dataset, from the datasets registry."""
    for name in registry("datasets").names():
        if registry("datasets").get(name) is type(dataset):
            arg = getattr(getattr(dataset, "config", None), "arg", None)
            return f"{name}:{arg}" if arg else name
    return None


def split_line(test_ds) -> str:
    """One line on where the held-out images come from (said before every run that scores)."""
    info = getattr(test_ds, "split_info", None) or {}
    if info.get("source") == "held out":
        return (f"held-out split: {info['test']} images ({info['holdout']:.0%} of each class, seed {info['seed']}) "
                f"kept out of the {info['train']} training images")  # fmt: skip
    if info.get("source") == "training images":
        return "no held-out split: the test scores are on training images"
    return f"test split: {len(test_ds)} images"


def train_tokenizer_run(
    preset: str | None,
    dataset=None,
    out: Path | None = None,
    budget: dict[str, Any] | None = None,
    *,
    device: str | None = None,
    dataset_spec: str | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    tokenizer_opts: dict[str, Any] | None = None,
    train_opts: dict[str, Any] | None = None,
    overwrite: bool = True,
    quiet: bool = False,
    image_size: int | None = None,
    channels: int | None = None,
    fit_dataset: bool = True,
    on_message: OnMessage | None = None,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Validate everything, then train tokenizer `preset` (any registered `TrainableTokenizer`;
    None: the multi-scale preset declared for the dataset) and write `out` (checkpoint, log,
    reconstructions.png, metrics.json). Returns the metrics.

    The dataset is `dataset` (a loaded training `ImageDataset`) or `dataset_spec` loaded with the
    explicit conversions `image_size` / `channels`. With `fit_dataset` the tokenizer takes its
    channels and image size from the dataset unless the options give them; without it (callers
    that chose a tokenizer for its size, e.g. `ablate`) the dataset is converted to the tokenizer.
    `on_message` / `on_progress`: see the module's doc (neither is called with `quiet`).
    Used by `train-tokenizer`, `train` (when it needs a tokenizer first) and `ablate`."""
    from genorder.tokenizer import TrainableTokenizer
    from genorder.tokenizer_training import (
        check_tokenizer_out,
        configure_for_dataset,
        train_tokenizer,
    )

    sections = sections or {}
    tok_opts = {k: v for k, v in sections.get("tokenizer", {}).items() if k != "name"}
    tok_opts.update({k: v for k, v in (tokenizer_opts or {}).items() if v is not None})
    train_section = dict(sections.get("train", {}))
    spec = dataset_spec or (_dataset_spec(dataset) if dataset is not None else DEFAULT_DATASET)
    if fit_dataset and dataset is None:
        dataset = load_dataset(spec, "train", image_size=image_size, channels=channels)
    if fit_dataset:
        from genorder.trainer import resolve_device

        dev_type = resolve_device(device or train_section.get("device") or "auto").type  # the CPU presets on a CPU
        preset, tok_opts = configure_for_dataset(preset, DEFAULT_KIND, dataset.channels, dataset.image_size, tok_opts,
                                                 device=dev_type)  # fmt: skip
    elif preset is None:
        raise UserError("a tokenizer preset is needed when the dataset is fitted to the tokenizer")
    cls = registry("tokenizers").get(preset)
    if not issubclass(cls, TrainableTokenizer):
        raise UserError(f"tokenizer {preset!r} cannot be trained: {cls.__name__} does not implement "
                        "genorder.TrainableTokenizer (configure_training, training_step)")  # fmt: skip
    budget_layers = [train_section.pop("budget", None), sections.get("budget"), budget]
    bud = build_config(Budget, *budget_layers, section="budget") if any(budget_layers) else Budget(**DEFAULT_BUDGET)
    tcfg = build_config(cls.TrainConfig, train_section, {**(train_opts or {}), "device": device},
                        {"budget": bud}, section="train")  # fmt: skip
    torch.manual_seed(tcfg.seed)  # the tokenizer's initialisation
    tok = registry("tokenizers").create(preset, tok_opts)
    if tcfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {tcfg.device}: CUDA is not available on this machine")
    if dataset is None:  # fit_dataset off: the caller asked for the tokenizer's size and channels
        dataset = load_dataset(spec, "train", image_size=tok.image_size, channels=tok.channels)
    if dataset.channels != tok.channels or dataset.image_size != tok.image_size:
        raise UserError(
            f"tokenizer {preset!r} takes {tok.channels}x{tok.image_size}px images, the dataset has "
            f"{dataset.channels}x{dataset.image_size}px; pass --image-size / --channels to convert the dataset"
        )
    if len(dataset) < tcfg.batch_size:
        raise UserError(f"the dataset has {len(dataset)} images, fewer than the batch size {tcfg.batch_size}")
    eval_ds = None
    if spec is not None:
        try:
            eval_ds = load_dataset(spec, "test", image_size=tok.image_size, channels=tok.channels)
        except UserError:
            eval_ds = None  # no test split: evaluate on training images (metrics.json says so)
    out = Path(out) if out is not None else Path("runs") / f"tokenizer-{preset}"
    check_tokenizer_out(out, overwrite)  # a folder not ours is refused, nothing written

    meta = {"dataset": spec or "", "preset": preset}
    if quiet:
        return train_tokenizer(tok, preset, dataset, tcfg, out, eval_dataset=eval_ds, meta=meta)
    if on_message is not None:
        n_params = sum(p.numel() for p in tok.parameters())
        on_message(
            f"{preset} · {n_params / 1e6:.2f} M params · {tok.channels}x{tok.image_size}px · "
            f"scales {list(tok.scales)} · V {tok.codebook_size} · {spec or 'dataset'} ({len(dataset):,} images) · "
            f"budget {bud.model_dump(exclude_none=True)} -> {out}"
        )
        if eval_ds is not None:
            on_message(split_line(eval_ds))
    stage = f"train {preset}"

    def progress(done: int, total: int | None, m: dict) -> None:
        if on_progress is not None:
            extra = f" · psnr {m['psnr']:.1f} dB" if "psnr" in m else ""
            on_progress(stage, done, total, f"loss {m['loss']:.4f}{extra}")

    return train_tokenizer(tok, preset, dataset, tcfg, out, progress=progress, eval_dataset=eval_ds, meta=meta)
