"""Training the multi-scale VQVAE (VAR_SPEC §1.6: VAR ships no tokenizer trainer): its part of the
`genorder.TrainableTokenizer` protocol; the loop, budget, schedule, checkpoints, metrics and grid are
the core's (`genorder.tokenizer_training`).

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

AdamW (the core sets its warmup + cosine learning rate); bf16 autocast on CUDA (the quantizer itself
always runs in fp32). A step whose loss or gradient norm is not finite changes nothing (no optimiser
step, no discriminator step, no restart) and reports `"skipped": True` (the core limits them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from genorder.tokenizer import TokenizerTrainConfig
from genorder.tokenizer_training import psnr_per_image
from genorder_plugins.vqvae.nets import norm

if TYPE_CHECKING:
    from genorder_plugins.vqvae.tokenizer import MultiScaleVQVAE


class VQVAETrainConfig(TokenizerTrainConfig):
    """`[train]` of the VQVAE: the core's loop options plus its losses, GAN and restarts."""

    betas: tuple[float, float] = Field((0.5, 0.9), description="AdamW betas (vaex)")
    weight_decay: float = Field(0.005, ge=0, description="AdamW weight decay on conv weights")
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


# -- the training protocol ----------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv weights only: no decay for biases, norms and the codebook."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim == 4 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]



class VQVAETraining:
    """The VQVAE's state while it trains (optimisers, discriminator, restart count)."""

    def __init__(self, tok: MultiScaleVQVAE, cfg: VQVAETrainConfig) -> None:
        self.tok, self.cfg = tok, cfg
        device = next(tok.parameters()).device
        self.device = device
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        tok.quantizer.restart_from = cfg.restart_from
        self.opt = torch.optim.AdamW(param_groups(tok, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        self.disc = self.d_opt = None
        if cfg.gan:
            self.disc = PatchDiscriminator(tok.channels, cfg.disc_channels, cfg.disc_layers).to(device)
            self.d_opt = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=0.0005)
        self.restarted_total = 0

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt] + ([self.d_opt] if self.d_opt is not None else [])

    def step(self, x: torch.Tensor, step: int, fraction: float) -> dict[str, Any]:
        cfg, tok, disc, dev = self.cfg, self.tok, self.disc, self.device
        use_gan = disc is not None and step > cfg.gan_start
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            rec, vq_loss, usages = tok(x)
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        l2 = (rec - x).square().mean()
        nll = cfg.l1_weight * l1 + cfg.l2_weight * l2
        loss = nll + cfg.vq_weight * vq_loss
        g_loss = gan_w = None
        if use_gan:
            disc.requires_grad_(False)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                g_loss = -disc(rec).float().mean()
            gan_w = cfg.gan_weight * adaptive_weight(nll, g_loss, tok.decoder.last_layer)
            loss = loss + gan_w * g_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(tok.parameters(), cfg.grad_clip)
        if not bool(torch.isfinite(loss.detach()) & torch.isfinite(gnorm)):
            # a non-finite loss or gradient: the weights are left alone (the core counts and limits these)
            self.opt.zero_grad(set_to_none=True)
            return {"loss": float(loss.detach()), "grad_norm": float(gnorm), "skipped": True}
        self.opt.step()
        d_loss = None
        if use_gan:
            disc.requires_grad_(True)
            self.d_opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                d_loss = hinge_d_loss(disc(x).float(), disc(rec.detach()).float())
            d_loss.backward()
            self.d_opt.step()
        restarted = 0
        if cfg.restart_every and (step == 1 or step % cfg.restart_every == 0) and fraction <= cfg.restart_until:
            restarted = tok.quantizer.restart_dead_codes(cfg.restart_min_hits)
            self.restarted_total += restarted
        m = {"loss": float(loss.detach()), "l1": float(l1.detach()), "l2": float(l2.detach()),
             "vq": float(vq_loss.detach()), "psnr": float(psnr_per_image(rec.detach().clamp(-1, 1), x).mean()),
             "grad_norm": float(gnorm), "usage_pct": [round(u, 2) for u in usages], "restarted": restarted}  # fmt: skip
        if use_gan:
            m.update(g_loss=float(g_loss.detach()), d_loss=float(d_loss.detach()), gan_weight=float(gan_w))
        return m

    def summary(self) -> dict[str, Any]:
        return {"train_usage_ema_pct": self.tok.quantizer.usage(self.cfg.batch_size),
                "codes_restarted": self.restarted_total}  # fmt: skip
