"""The tokenizer training loop, the held-out tokenizer metrics and the reconstruction grid.

Any registered `TrainableTokenizer` trains here (`genorder train-tokenizer`): the loop owns the data
order, the budget (`genorder.budget`), the learning-rate schedule (linear warmup, cosine decay to
`final_lr` x peak), log.jsonl, checkpoints (safetensors + JSON, `load_tokenizer` rebuilds them) and
the final evaluation; the tokenizer owns its losses and optimisers (`training_step`).

Files written to `out_dir`: tokenizer.safetensors/.json (periodically and at the end), log.jsonl,
reconstructions.png (one row per image of a seeded class-balanced subset; columns: the original, then the
reconstruction from the first k scales, each column captioned) and metrics.json:
  * psnr (all scales) and psnr_per_k (decoding the first k scales), per-image mean, in dB, over a
    seeded class-balanced subset of eval_images (`scored_images`; never "the first n");
  * codebook usage per scale (% of V, and % of what the images could use);
  * the colour check: the per-channel mean of the originals and of the reconstructions, and the
    per-channel Pearson correlation of reconstructed against original pixels (a grey or
    channel-swapped reconstruction of colour images shows here while its PSNR can look fine).

Also `default_tokenizer`: the preset for an order kind and a dataset's channels and size, from the
presets' `default_for` declarations.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from genorder.budget import BudgetTracker
from genorder.checkpoint import save_checkpoint
from genorder.data import make_loader
from genorder.errors import UserError
from genorder.images import save_grid
from genorder.outdir import TOKENIZER, check_out, mark
from genorder.registry import registry
from genorder.subsets import SUBSET_SEED, balanced_subset
from genorder.tokenizer import Tokenizer, TokenizerTrainConfig, TrainableTokenizer

Progress = Callable[[int, "int | None", dict], None]  # (steps done, steps total or None, last metrics)


# -- choosing a preset ---------------------------------------------------------------------------
def default_tokenizer(kind: str, channels: int, image_size: int, device: str | None = None) -> str:
    """The registered tokenizer declaring itself the default for (kind, channels, image_size) on
    `device` (a device type, "cpu" or "cuda"): a declaration for that device wins over one for any
    device (`DefaultFor.device` None); with `device` None only the latter count.

    Raises UserError naming the declared shapes of that kind when none fits, so the user can pass
    `--image-size` (an explicit resize) or `--tokenizer`."""
    reg = registry("tokenizers")
    fits, generic, declared = [], [], []
    device = None if device is None else str(device).split(":")[0]
    for name in reg.names():
        for d in getattr(reg.get(name), "default_for", ()):
            d_device = getattr(d, "device", None)
            if d.kind != kind or (d_device is not None and d_device != device):
                continue
            declared.append(f"{d.channels}x{d.image_size}px ({name})")
            if d.channels == channels and d.image_size == image_size:
                (generic if d_device is None else fits).append(name)
    fits = fits or generic
    if not fits:
        shapes = ", ".join(sorted(declared)) or "none"
        raise UserError(
            f"no {kind} tokenizer preset is declared for {channels}x{image_size}px images "
            f"(declared: {shapes}); pass --image-size to resize the dataset to one of them, "
            "or --tokenizer PRESET with --set tokenizer.image_size=... / tokenizer.channels=..."
        )
    return sorted(fits)[0]


# -- metrics ---------------------------------------------------------------------------------------
def psnr_per_image(x_BChw: torch.Tensor, y_BChw: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [-1, 1], computed on the [0, 1] range."""
    mse = ((x_BChw.float() - y_BChw.float()) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def spread_over_classes(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of n items taken round-robin over the classes (first item of each class, then the
    second, ...), so a grid of n rows shows every class when n >= the number of classes."""
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    out: list[int] = []
    depth = 0
    while len(out) < min(n, len(labels)):
        for idx in by_class:
            if depth < len(idx) and len(out) < n:
                out.append(idx[depth])
        depth += 1
    return torch.tensor(out, dtype=torch.long)


def _images(dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is not None:
        return get_batch(idx)
    items = [dataset[int(i)] for i in idx]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.tensor([int(y) for _, y in items])


def scored_images(dataset, n: int, seed: int = SUBSET_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The images every tokenizer score uses: a seeded class-balanced subset of n
    (`genorder.subsets.balanced_subset`; a seeded shuffle for an unlabelled dataset), as floats
    (m, C, H, W) in [-1, 1] and labels (m,), m = min(n, len(dataset)). Round-robin order, so its
    first rows show every class."""
    idx = balanced_subset(getattr(dataset, "labels", None), n, seed, total=len(dataset))
    return _images(dataset, idx)


def colour_check(originals: torch.Tensor, recons: torch.Tensor) -> dict[str, list[float]]:
    """Per channel: mean of originals and reconstructions (in [-1, 1]) and the Pearson correlation
    of reconstructed against original pixel values. (N, C, H, W) each."""
    x = rearrange(originals.double(), "n c h w -> c (n h w)")
    y = rearrange(recons.double(), "n c h w -> c (n h w)")
    xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    corr = (xc * yc).sum(1) / (xc.square().sum(1).sqrt() * yc.square().sum(1).sqrt()).clamp_min(1e-12)
    return {"mean_original": x.mean(1).tolist(), "mean_reconstruction": y.mean(1).tolist(),
            "correlation": corr.tolist()}  # fmt: skip


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer: Tokenizer, dataset, n: int = 500, n_prefix: int = 100, batch_size: int = 100
) -> dict[str, Any]:
    """Held-out reconstruction metrics over a seeded class-balanced subset of `n` images
    (`scored_images`; see the module docstring); PSNR from the first k scales over the first
    `n_prefix` of them (K decodes per image; also balanced, the subset being round-robin)."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(iter(tokenizer.parameters()), torch.empty(0)).device
    K, V = len(tokenizer.scales), tokenizer.codebook_size
    psnr_full = 0.0
    psnr_k = torch.zeros(K, dtype=torch.float64)
    seen_KV = torch.zeros(K, V, dtype=torch.bool)
    images, _ = scored_images(dataset, n)
    n_prefix = min(n_prefix, len(images))
    recons, done = [], 0
    for x in images.split(batch_size):
        x = x.to(device)
        tokens = tokenizer.encode(x)
        for k in range(K):
            seen_KV[k, tokens[k].flatten().cpu().unique()] = True
        rec = tokenizer.decode(tokens)
        recons.append(rec.float().cpu())
        psnr_full += float(psnr_per_image(rec, x).double().sum())
        m = max(0, min(len(x), n_prefix - done))  # rows of this batch that get the per-k curve
        for k in range(K if m else 0):
            part = tokenizer.decode([t[:m] for t in tokens[: k + 1]])
            psnr_k[k] += psnr_per_image(part, x[:m]).double().sum().cpu()
        done += len(x)
    tokenizer.train(was_training)
    count = len(images)
    used = seen_KV.sum(1).tolist()
    possible = [min(V, count * p * p) for p in tokenizer.scales]
    return {
        "eval_images": count,
        "psnr": psnr_full / count,
        "psnr_per_k": (psnr_k / max(n_prefix, 1)).tolist(),
        "psnr_per_k_images": n_prefix,
        "codes_used_per_scale": used,
        "usage_pct": [100.0 * u / V for u in used],
        "usage_of_possible_pct": [100.0 * u / m for u, m in zip(used, possible)],
        "colour": colour_check(images, torch.cat(recons)),
    }


USABLE_PSNR_DB = 18.0  # below this held-out PSNR a tokenizer's reconstructions are far from usable
USABLE_CORRELATION = 0.8  # below this per-channel correlation the colours are not kept


def quality_warning(metrics: dict[str, Any]) -> str | None:
    """One line when a tokenizer is far below a usable quality (held-out PSNR under USABLE_PSNR_DB,
    or a colour channel's correlation with the original under USABLE_CORRELATION), else None."""
    psnr = metrics.get("psnr")
    corr = list((metrics.get("colour") or {}).get("correlation") or [])
    low_psnr = psnr is not None and psnr < USABLE_PSNR_DB
    low_corr = bool(corr) and min(corr) < USABLE_CORRELATION
    if not (low_psnr or low_corr):
        return None
    corr_s = "/".join(f"{c:.2f}" for c in corr) if corr else "n/a"
    return (
        f"tokenizer far below a usable quality: PSNR {psnr:.1f} dB (usable >= {USABLE_PSNR_DB:g}), per-channel "
        f"colour correlation {corr_s} (usable >= {USABLE_CORRELATION:g}) after {metrics.get('steps', '?')} steps; "
        "train it longer (--steps)"
    )


@torch.no_grad()
def reconstruct_grid(
    tokenizer: Tokenizer,
    dataset,
    path: str | Path,
    n: int = 8,
    scale: int = 2,
    class_names: list[str] | None = None,
) -> Path:
    """PNG with one row per image, the first n of `scored_images` (seeded, class-balanced, every
    class before any repeats), each row captioned with its class: the original, then the reconstruction from the first k
    scales for k = 1..K, each column captioned ("orig.", "k=1 / 1x1", ..., the last = all scales)."""
    x, y = scored_images(dataset, n)
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(iter(tokenizer.parameters()), torch.empty(0)).device
    x = x.to(device)
    tokens = tokenizer.encode(x)
    cols = [x] + [tokenizer.decode(tokens[: k + 1]) for k in range(len(tokens))]
    tokenizer.train(was_training)
    grid = rearrange(torch.stack([c.float() for c in cols], dim=1), "n k c h w -> (n k) c h w")
    top = ["orig."] + [f"k={k + 1}\n{p}x{p}" for k, p in enumerate(tokenizer.scales)]
    scale = max(scale, math.ceil(36 / x.shape[-1]))  # room for the captions under small images
    names = class_names or getattr(dataset, "class_names", None)
    left = [str(names[int(c)]) if names else str(int(c)) for c in y]
    return save_grid(grid.cpu(), path, nrow=len(cols), scale=scale, labels_left=left, labels_top=top)


# -- the loop ----------------------------------------------------------------------------------------
def lr_at(cfg: TokenizerTrainConfig, progress: float) -> float:
    """Linear warmup from 1% of the peak, then cosine from the peak to `final_lr` x peak."""
    if cfg.warmup > 0 and progress < cfg.warmup:
        return cfg.lr * (0.01 + 0.99 * progress / cfg.warmup)
    t = min(1.0, (progress - cfg.warmup) / max(1e-12, 1 - cfg.warmup))
    return cfg.lr * (cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state` holding a NaN or an infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


class NonFiniteGuard:
    """The model trainer's non-finite rule for the tokenizer loop: a step whose loss is not finite
    is skipped (a `TrainableTokenizer` reports `"skipped": True` when it left its weights alone; a
    non-finite loss it did not skip is checked: weights made non-finite stop the run at once);
    more than `streak` skipped in a row or `total` in all stop the run with `TrainingDiverged`,
    and a non-finite state is never saved: the last good checkpoint stays."""

    def __init__(self, streak: int, total: int, lr: float) -> None:
        self.limit_streak, self.limit_total, self.lr = streak, total, lr
        self.streak = self.total = 0
        self.saved_step: int | None = None

    def diverged(self, what: str):
        from genorder.trainer import TrainingDiverged

        kept = (f"the last good checkpoint (step {self.saved_step}) is kept" if self.saved_step is not None
                else "no checkpoint had been saved, so none was written")  # fmt: skip
        return TrainingDiverged(f"training diverged: {what}. Nothing non-finite was saved: {kept}. "
                                f"Lower the learning rate (now peak {self.lr:g}).")  # fmt: skip

    def check(self, m: dict[str, Any], tok: Tokenizer) -> bool:
        """Count step metrics `m`; True when the step was non-finite (then `m["skipped"]` is set)."""
        try:
            finite = math.isfinite(float(m["loss"]))
        except (KeyError, TypeError, ValueError):
            finite = False
        if finite and not m.get("skipped"):
            self.streak = 0
            return False
        if not m.get("skipped"):  # the tokenizer updated its weights on a non-finite loss
            bad = nonfinite_tensors(tok.state_dict())
            if bad:
                raise self.diverged(f"the loss was non-finite at step {m.get('step')} and the update made "
                                    f"{len(bad)} weight tensors non-finite (e.g. {bad[0]})")  # fmt: skip
        m["skipped"] = True
        self.streak += 1
        self.total += 1
        return True

    def raise_if_over(self, step: int) -> None:
        if self.streak > self.limit_streak or self.total > self.limit_total:
            raise self.diverged(
                f"the loss was non-finite at step {step} ({self.streak} in a row, {self.total} in all; limits "
                f"train.nonfinite_streak={self.limit_streak}, train.nonfinite_total={self.limit_total}); "
                "those steps were skipped"
            )


def _is_training_images(dataset) -> bool:
    """A "test" split that is the training images (a dataset without a held-out split)."""
    return (getattr(dataset, "split_info", None) or {}).get("source") == "training images"


def checkpoint_meta(name: str, tokenizer: Tokenizer) -> dict[str, Any]:
    """What `genorder.runs.load_tokenizer` needs to rebuild a tokenizer: registry name + config."""
    return {"component": "tokenizer", "name": name, "config": tokenizer.config.model_dump(mode="json")}


def check_tokenizer_out(out: str | Path, overwrite: bool, flag: str = "--out") -> None:
    """UserError naming `flag` unless `out` may receive a trained tokenizer: new, empty, or a
    tokenizer folder genorder wrote (`genorder.outdir.check_out`), and then only with `overwrite`
    when it already holds a tokenizer. Reads only."""
    out = Path(out)
    check_out(out, TOKENIZER, flag)
    if not overwrite and (out / "tokenizer.json").exists():
        raise UserError(f"{out} already holds a tokenizer; pass --overwrite or choose another {flag}")


def train_tokenizer(
    tokenizer: TrainableTokenizer,
    name: str,
    dataset,
    config: TokenizerTrainConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    eval_dataset=None,
    meta: dict | None = None,
) -> dict[str, Any]:
    """Train `tokenizer` (registered as `name`) on `dataset` until `config.budget` is spent; write
    `out_dir` (see the module docstring) and return the final metrics. `eval_dataset` (default: the
    training images) gives the held-out metrics; `meta` is merged into the checkpoint's JSON."""
    from genorder.trainer import resolve_device

    if not isinstance(tokenizer, TrainableTokenizer):
        raise UserError(f"tokenizer {name!r} ({type(tokenizer).__name__}) does not implement TrainableTokenizer")
    if dataset.channels != tokenizer.channels or dataset.image_size != tokenizer.image_size:
        raise UserError(
            f"tokenizer {name!r} takes {tokenizer.channels}x{tokenizer.image_size}px images, the dataset has "
            f"{dataset.channels}x{dataset.image_size}px"
        )
    cfg = config
    out_dir = Path(out_dir)
    check_tokenizer_out(out_dir, overwrite=True)
    mark(out_dir, TOKENIZER)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    tok = tokenizer.to(device).train()
    optimizers = tok.configure_training(cfg)
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=cfg.seed)
    tracker = BudgetTracker(cfg.budget)
    b = cfg.budget
    total = b.steps if b.steps is not None else (math.ceil(b.images / cfg.batch_size) if b.images else None)
    ckpt_meta = {**checkpoint_meta(name, tok), "train": cfg.model_dump(mode="json"), **(meta or {})}
    log_path = out_dir / "log.jsonl"
    log_path.unlink(missing_ok=True)  # our own folder (check_out): a log of an earlier training here
    m: dict[str, Any] = {}
    t_last, img_last = time.perf_counter(), 0
    guard = NonFiniteGuard(cfg.nonfinite_streak, cfg.nonfinite_total, cfg.lr)

    def save(final: bool) -> None:
        bad = nonfinite_tensors(tok.state_dict())
        if bad:
            raise guard.diverged(
                f"refusing to save a non-finite tokenizer at step {tracker.spent.steps} ({len(bad)} tensors, "
                f"e.g. {bad[0]})"
            )
        save_checkpoint(out_dir / "tokenizer", tok.state_dict(),
                        {**ckpt_meta, "spent": tracker.spent.as_dict(), "final": final})  # fmt: skip
        guard.saved_step = tracker.spent.steps

    stopped_by = tracker.exhausted()
    while stopped_by is None:
        step = tracker.spent.steps + 1
        lr = lr_at(cfg, tracker.fraction())
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = lr
        x, _ = next(loader)
        x = x.to(device, non_blocking=True)
        m = {"step": step, **tok.training_step(x, step, tracker.fraction()), "lr": lr}
        tracker.update(x.shape[0])
        skipped = guard.check(m, tok)
        if step % cfg.log_every == 0 or step == 1 or skipped:
            now = time.perf_counter()
            m["images_per_s"] = (tracker.spent.images - img_last) / max(now - t_last, 1e-9)
            t_last, img_last = now, tracker.spent.images
            m["seconds"] = tracker.spent.seconds
            with log_path.open("a") as f:
                f.write(json.dumps(m) + "\n")
        guard.raise_if_over(step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save(final=False)
        if progress:
            progress(step, total, m)
        stopped_by = tracker.exhausted()

    save(final=True)
    eval_ds = eval_dataset if eval_dataset is not None else dataset
    metrics = evaluate_tokenizer(tok, eval_ds, cfg.eval_images, cfg.eval_prefix_images, max(cfg.batch_size, 100))
    reconstruct_grid(tok, eval_ds, out_dir / "reconstructions.png", n=cfg.grid_images)
    spent = tracker.spent.as_dict()
    metrics = {
        "tokenizer": name,
        "scales": list(tok.scales),
        "vocab_size": tok.codebook_size,
        "channels": tok.channels,
        "image_size": tok.image_size,
        "eval_split": "test" if eval_dataset is not None and not _is_training_images(eval_dataset) else "train",
        "test_split": getattr(eval_ds, "split_info", None),  # where the test split came from (a held-out part?)
        **metrics,
        **tok.training_summary(),
        "final_train_loss": m.get("loss"),
        "steps": spent["steps"],
        "images": spent["images"],
        "seconds": spent["seconds"],
        "stopped_by": stopped_by,
        "device": str(device),
        **{k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float))},
    }
    from genorder.runs import write_json

    metrics["quality_warning"] = quality_warning(metrics)
    write_json(out_dir / "metrics.json", metrics)
    tok.eval()
    return metrics


NOT_IN_KEY = ("device", "checkpoint_every", "log_every", "eval_images", "eval_prefix_images", "grid_images")


def training_identity(name: str, tokenizer_opts: dict[str, Any] | None, budget: dict[str, Any],
                      train_opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides the weights of preset `name` trained under `budget` with `train_opts`, with
    every default filled in (the preset's Config and its TrainConfig), so that `train` and
    `compare` asking for the same training get the same cache key whether an option is given
    explicitly or left at its default. Options that do not change the weights (device, logging,
    evaluation sizes: NOT_IN_KEY) are left out."""
    from genorder.budget import Budget
    from genorder.config import build_config

    cls = registry("tokenizers").get(name)
    config = build_config(cls.Config, tokenizer_opts, section="tokenizer").model_dump(mode="json")
    given = {k: v for k, v in (train_opts or {}).items() if v is not None and k not in NOT_IN_KEY}
    train_cls = getattr(cls, "TrainConfig", None)
    if train_cls is None:  # not trainable here: the options as given
        return {"preset": name, "config": config, "budget": budget, "train": given}
    bud = build_config(Budget, budget, section="budget")
    tcfg = build_config(train_cls, given, {"budget": bud}, section="train").model_dump(mode="json", exclude=set(NOT_IN_KEY))
    return {"preset": name, "config": config, "train": tcfg}


def check_preset_for_order(order, name: str, options: dict[str, Any] | None = None) -> None:
    """Raise the order's UserError (`Order.check_tokenizer`) when preset `name` with `options` cannot
    serve `order`, before any tokenizer is trained: the preset is built on the meta device (no
    memory, no weights), which is all `check_tokenizer` needs (scales, codebook, latent shape)."""
    try:
        with torch.device("meta"):
            tok = registry("tokenizers").create(name, dict(options or {}))
    except UserError:
        raise
    except Exception:  # noqa: BLE001 -- a preset that cannot be built on meta is checked after training, as before
        return
    try:
        order.check_tokenizer(tok)
    except UserError as err:
        raise UserError(f"--tokenizer {name}: {err} (checked before training it)") from None


def configure_for_dataset(
    name: str | None, kind: str, channels: int, image_size: int, options: dict[str, Any] | None = None,
    device: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The dataset chooses or configures the tokenizer: `name` None picks the preset declared for
    (kind, channels, image_size) on `device` (see `default_tokenizer`); then its `channels` / `image_size` options (when its Config has
    them) default to the dataset's, unless `options` gives them. Raises UserError when the preset
    cannot take that shape (the data is never converted here)."""
    from genorder.config import build_config

    if name is None:
        name = default_tokenizer(kind, channels, image_size, device)
    cls = registry("tokenizers").get(name)
    opts = dict(options or {})
    fields = cls.Config.model_fields
    for key, value in (("channels", channels), ("image_size", image_size)):
        if key in fields and key not in opts:
            opts[key] = value
    try:
        build_config(cls.Config, opts, section="tokenizer")
    except UserError as err:
        raise UserError(
            f"{err}\ntokenizer {name!r} cannot take the dataset's {channels}x{image_size}px images; pass "
            "--image-size to resize the dataset, or another --tokenizer"
        ) from None
    return name, opts
