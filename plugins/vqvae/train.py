"""Training and evaluating the multi-scale VQVAE (VAR_SPEC §1.6: VAR ships no tokenizer trainer).

Loss per step (vaex's recipe without LPIPS, whose VGG weights are not available offline):
    L = l1_weight * |x - x_rec|_1 + l2_weight * |x - x_rec|^2 + vq_weight * L_vq
        [+ gan_weight * w_adaptive * (-D(x_rec))   after `gan_start` steps, with `gan`]
L_vq is the quantizer's multi-scale loss (beta-weighted commitment + codebook term on the cumulative
f_hat, averaged over scales). The optional discriminator is a small PatchGAN trained with the hinge
loss; w_adaptive = |grad_last NLL| / |grad_last GAN| (last decoder conv), clamped to [0.015, 1e4].

Codebook health: every `restart_every` steps (and once after the first step, which amounts to a
data-dependent codebook init) codes that no scale used since the previous restart are moved onto
recent encoder residuals (`MultiScaleQuantizer.restart_dead_codes`); restarts stop after
`restart_until` of the budget so the codebook settles before the end.

AdamW, linear warmup then cosine decay to `final_lr` x peak over the budget's progress; bf16
autocast on CUDA (the quantizer itself always runs in fp32). Files written to `out_dir`:
tokenizer.safetensors/.json (periodically and at the end, atomically), log.jsonl,
reconstructions.png (originals, then the reconstruction from the first k scales for every k) and
metrics.json (PSNR per k and per-scale codebook usage on held-out images).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import nn

from genorder.budget import Budget, BudgetTracker
from genorder.checkpoint import save_checkpoint
from genorder.config import ComponentConfig
from genorder.data import make_loader
from genorder.images import save_grid
from genorder.runs import write_json
from genorder.trainer import resolve_device
from genorder_plugins.vqvae.nets import norm
from genorder_plugins.vqvae.tokenizer import MultiScaleVQVAE

Progress = Callable[[int, "int | None", dict], None]  # (steps done, steps total or None, last metrics)
Log = Callable[[dict], None]


class TokenizerTrainConfig(ComponentConfig):
    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(3e-4, gt=0, description="peak AdamW learning rate (also the discriminator's)")
    betas: tuple[float, float] = Field((0.5, 0.9), description="AdamW betas (vaex)")
    weight_decay: float = Field(0.005, ge=0, description="AdamW weight decay on conv weights")
    warmup: float = Field(0.02, ge=0, lt=1, description="fraction of the budget with a linear lr warmup")
    final_lr: float = Field(0.3, ge=0, le=1, description="lr at the end as a fraction of the peak (cosine)")
    grad_clip: float = Field(10.0, gt=0, description="global gradient-norm clip")
    l1_weight: float = Field(0.2, ge=0, description="weight of the pixel L1 loss")
    l2_weight: float = Field(1.0, ge=0, description="weight of the pixel MSE loss")
    vq_weight: float = Field(1.0, ge=0, description="weight of the VQ loss")
    gan: bool = Field(False, description="train a PatchGAN discriminator (hinge loss)")
    gan_weight: float = Field(0.4, ge=0, description="generator GAN weight (times the adaptive weight)")
    gan_start: int = Field(2000, ge=0, description="step at which the GAN losses start")
    disc_channels: int = Field(64, ge=8, description="width of the discriminator's first conv")
    disc_layers: int = Field(2, ge=1, le=5, description="stride-2 convs in the discriminator")
    restart_every: int = Field(25, ge=0, description="steps between dead-code restarts (0: never)")
    restart_until: float = Field(0.9, ge=0, le=1, description="no restarts after this fraction of the budget")
    restart_min_hits: int = Field(1, ge=1, description="a code hit fewer times since the last restart is dead")
    restart_from: Literal["scales", "positions"] = Field(
        "scales", description="re-seed from residuals of every scale in equal shares, or uniformly over positions"
    )
    budget: Budget = Field(default_factory=lambda: Budget(steps=300), description="when to stop")
    checkpoint_every: int | None = Field(500, ge=1, description="steps between checkpoints (None: end only)")
    log_every: int = Field(20, ge=1, description="steps between log records")
    eval_images: int = Field(500, ge=1, description="held-out images for the final PSNR and codebook usage")
    eval_prefix_images: int = Field(
        100, ge=1, description="of those, images also decoded from every prefix of scales (PSNR per k)"
    )
    grid_images: int = Field(8, ge=1, description="rows of reconstructions.png")
    seed: int = Field(0, description="seed of the batch order and of the restarts")
    device: str = Field("auto", description='"auto" (cuda if available), "cpu", "cuda", "cuda:1", ...')
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on cuda")


# -- discriminator ----------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """PatchGAN: conv4x4/2 + LeakyReLU, `layers - 1` x (conv4x4/2, GN, LeakyReLU), conv4x4/1 -> 1 logit map."""

    def __init__(self, in_channels: int, channels: int = 64, layers: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), norm(2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        mods += [nn.Conv2d(c, c, 3, 1, 1), norm(c), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.net(x_BChw)  # (B, 1, h, w) patch logits


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """|grad NLL| / |grad GAN| at the decoder's last layer, clamped to [0.015, 1e4] (vaex)."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_nll.norm() / (g_gan.norm() + 1e-4)).clamp(0.015, 1e4).detach()


# -- helpers -------------------------------------------------------------------------------------


def lr_at(cfg: TokenizerTrainConfig, progress: float) -> float:
    """Linear warmup from 1% of the peak, then cosine from the peak to `final_lr` x peak."""
    if cfg.warmup > 0 and progress < cfg.warmup:
        return cfg.lr * (0.01 + 0.99 * progress / cfg.warmup)
    t = min(1.0, (progress - cfg.warmup) / max(1e-12, 1 - cfg.warmup))
    return cfg.lr * (cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * t)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv weights only: no decay for biases, norms and the codebook."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim == 4 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def psnr_per_image(x_BChw: torch.Tensor, y_BChw: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [-1, 1], computed on the [0, 1] range."""
    mse = ((x_BChw.float() - y_BChw.float()) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _subset(dataset, n: int) -> torch.Tensor:
    """The first n images of a dataset as (n, C, H, W) floats in [-1, 1]."""
    n = min(n, len(dataset))
    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is not None:
        return get_batch(torch.arange(n))[0]
    return torch.stack([torch.as_tensor(dataset[i][0]) for i in range(n)])


# -- evaluation and grids ------------------------------------------------------------------------


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer: MultiScaleVQVAE, dataset, n: int = 500, n_prefix: int = 100, batch_size: int = 100
) -> dict[str, Any]:
    """Mean per-image PSNR of the full reconstruction and per-scale usage over the first `n` images;
    PSNR when decoding from only the first k scales (k = 1..K) over the first `n_prefix` of them
    (K decoder passes per image, so fewer images).

    usage_pct[k]: % of the V codes used at scale k over the n images; usage_of_possible_pct[k]: the
    same divided by the most codes scale k could use, min(V, n * p_k^2)."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    K, V = len(tokenizer.scales), tokenizer.codebook_size
    psnr_full = 0.0
    psnr_k = torch.zeros(K, dtype=torch.float64)
    seen_KV = torch.zeros(K, V, dtype=torch.bool)
    images = _subset(dataset, n)
    n_prefix = min(n_prefix, len(images))
    done = 0
    for x in images.split(batch_size):
        x = x.to(device)
        tokens = tokenizer.encode(x)
        for k in range(K):
            seen_KV[k, tokens[k].flatten().cpu().unique()] = True
        psnr_full += float(psnr_per_image(tokenizer.decode(tokens), x).double().sum())
        m = max(0, min(len(x), n_prefix - done))  # rows of this batch that get the per-k curve
        for k in range(K if m else 0):
            rec = tokenizer.decode([t[:m] for t in tokens[: k + 1]])
            psnr_k[k] += psnr_per_image(rec, x[:m]).double().sum().cpu()
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
    }


@torch.no_grad()
def reconstruct_grid(tokenizer: MultiScaleVQVAE, images: torch.Tensor, path: str | Path, scale: int = 2) -> Path:
    """PNG with one row per image: the original, then the reconstruction from the first k scales
    for k = 1..K (so the last column is the full reconstruction)."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    x = images.to(device)
    tokens = tokenizer.encode(x)
    cols = [x] + [tokenizer.decode(tokens[: k + 1]) for k in range(len(tokens))]
    tokenizer.train(was_training)
    grid = rearrange(torch.stack(cols, dim=1), "n k c h w -> (n k) c h w")
    return save_grid(grid.cpu(), path, nrow=len(cols), scale=scale)


# -- training --------------------------------------------------------------------------------------


def train_tokenizer(
    tokenizer: MultiScaleVQVAE,
    dataset,
    config: TokenizerTrainConfig,
    out_dir: Path,
    progress: Progress | None = None,
    log: Log | None = None,
    eval_dataset=None,
    meta: dict | None = None,
) -> dict[str, Any]:
    """Train `tokenizer` on `dataset` until `config.budget` is spent; returns the final metrics.

    `eval_dataset` (default: the first images of `dataset`) gives the held-out PSNR / usage;
    `meta` is merged into the checkpoint's JSON (e.g. the dataset spec)."""
    cfg = config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.seed)
    tok = tokenizer.to(device).train()
    quant = tok.quantizer
    quant.restart_from = cfg.restart_from
    opt = torch.optim.AdamW(param_groups(tok, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    disc = d_opt = None
    if cfg.gan:
        disc = PatchDiscriminator(tok.channels, cfg.disc_channels, cfg.disc_layers).to(device)
        d_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=0.0005)
    loader = make_loader(dataset, cfg.batch_size, shuffle=True, seed=cfg.seed)
    tracker = BudgetTracker(cfg.budget)
    b = cfg.budget
    total = b.steps if b.steps is not None else (math.ceil(b.images / cfg.batch_size) if b.images else None)
    ckpt_meta = {**tok.checkpoint_meta(), "train": cfg.model_dump(mode="json"), **(meta or {})}
    log_path = out_dir / "log.jsonl"
    restarted_total = 0
    t_last, img_last = time.perf_counter(), 0
    m: dict[str, Any] = {}

    def save(final: bool) -> None:
        save_checkpoint(out_dir / "tokenizer", tok.state_dict(),
                        {**ckpt_meta, "spent": tracker.spent.as_dict(), "final": final})  # fmt: skip

    stopped_by = tracker.exhausted()
    while stopped_by is None:
        step = tracker.spent.steps + 1
        lr = lr_at(cfg, tracker.fraction())
        for g in opt.param_groups:
            g["lr"] = lr
        x, _ = next(loader)
        x = x.to(device, non_blocking=True)
        use_gan = disc is not None and step > cfg.gan_start
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            rec, vq_loss, usages = tok(x)
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).square().mean()
        nll = cfg.l1_weight * l1 + cfg.l2_weight * l2
        loss = nll + cfg.vq_weight * vq_loss
        g_loss = gan_w = None
        if use_gan:
            disc.requires_grad_(False)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                g_loss = -disc(rec).float().mean()
            gan_w = cfg.gan_weight * adaptive_weight(nll, g_loss, tok.decoder.last_layer)
            loss = loss + gan_w * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(tok.parameters(), cfg.grad_clip)
        opt.step()
        d_loss = None
        if use_gan:
            disc.requires_grad_(True)
            d_opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                d_loss = hinge_d_loss(disc(x).float(), disc(rec.detach()).float())
            d_loss.backward()
            d_opt.step()
        tracker.update(x.shape[0])
        restarted = 0
        if cfg.restart_every and (step == 1 or step % cfg.restart_every == 0) and tracker.fraction() <= cfg.restart_until:
            restarted = quant.restart_dead_codes(cfg.restart_min_hits)
            restarted_total += restarted
        m = {"step": step, "loss": float(loss.detach()), "l1": float(l1.detach()), "l2": float(l2.detach()),
             "vq": float(vq_loss.detach()), "psnr": float(psnr_per_image(rec.detach().clamp(-1, 1), x).mean()),
             "lr": lr, "grad_norm": float(gnorm), "usage_pct": [round(u, 2) for u in usages],
             "restarted": restarted}  # fmt: skip
        if use_gan:
            m.update(g_loss=float(g_loss.detach()), d_loss=float(d_loss.detach()), gan_weight=float(gan_w))
        if step % cfg.log_every == 0 or step == 1:
            now = time.perf_counter()
            m["images_per_s"] = (tracker.spent.images - img_last) / max(now - t_last, 1e-9)
            t_last, img_last = now, tracker.spent.images
            m["seconds"] = tracker.spent.seconds
            with log_path.open("a") as f:
                f.write(json.dumps(m) + "\n")
            if log:
                log(m)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save(final=False)
        if progress:
            progress(step, total, m)
        stopped_by = tracker.exhausted()
        if not math.isfinite(m["loss"]):
            stopped_by = "non-finite loss"

    save(final=True)
    eval_ds = eval_dataset if eval_dataset is not None else dataset
    metrics = evaluate_tokenizer(tok, eval_ds, cfg.eval_images, cfg.eval_prefix_images, max(cfg.batch_size, 100))
    reconstruct_grid(tok, _subset(eval_ds, cfg.grid_images), out_dir / "reconstructions.png")
    spent = tracker.spent.as_dict()
    metrics = {
        "tokenizer": tok.registry_name,
        "scales": list(tok.scales),
        "vocab_size": tok.codebook_size,
        "eval_split": "test" if eval_dataset is not None else "train",
        **metrics,
        "train_usage_ema_pct": quant.usage(cfg.batch_size),
        "codes_restarted": restarted_total,
        "final_train_loss": m.get("loss"),
        "steps": spent["steps"],
        "images": spent["images"],
        "seconds": spent["seconds"],
        "stopped_by": stopped_by,
        "device": str(device),
        **{k: v for k, v in (meta or {}).items() if isinstance(v, (str, int, float))},
    }
    write_json(out_dir / "metrics.json", metrics)
    tok.eval()
    return metrics
