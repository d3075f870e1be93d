"""Multi-scale residual vector quantizer with one shared codebook (VAR_SPEC §1.4, §1.5).

Encoding a latent f (B, Cvae, H, W) walks the scales p_1 < ... < p_K = H, coarse to fine:
    z_k  = area_down(f_rest, p_k)             (the last scale: f_rest itself)
    idx_k = nearest code of each z_k position  (squared L2, or cosine with `znorm`; no gradient)
    h_k  = phi_sel(k)( bicubic_up(E[idx_k], H) )   (the last scale: no interpolation)
    f_hat += h_k ; f_rest -= h_k
phi is a 3x3 conv mixed residually, (1 - r) h + r conv(h), applied AFTER upsampling. The phi used at
scale k is chosen by the tick rule (`phi_indices`). The VQ loss is taken on the cumulative f_hat after
every scale and averaged over scales; the decoder gets f_hat through a straight-through estimator.

Codebook health (not in VAR, which ships a pretrained tokenizer; re-implementations report collapse
at the small scales, VAR_SPEC §1.6): in training mode the quantizer counts how often each code is hit
(`hits_V`, all scales together) and keeps a sample of the residuals z it quantized in the last batch
(`_pool_NC`). `restart_dead_codes()` moves every code hit fewer than `min_hits` times since the last
restart onto a randomly chosen recent residual (plus a little noise), so it lands where the encoder
actually puts vectors; the trainer calls it at a fixed interval and stops before the end of training.
The sample takes the same number of residuals from every scale (`restart_from = "scales"`): drawn
uniformly over positions ("positions") it is ~99% fine-scale residuals, and the coarse scales, whose
residuals are few and large, stayed collapsed onto one or two codes (measured on Fashion-MNIST: the
1x1 scale used 1 code over 500 test images).

Per-scale usage % (what `forward` returns, for logging) follows VAR's EMA of hit counts (copy on the
first call, 0.9/0.1 for the next 99, then 0.99/0.01), with a per-scale threshold adapted from VAR's
single one: a code counts as used at scale k when its EMA hit count is >= 0.08 x the count it would
have under uniform use at that scale, 0.08 * B * p_k^2 / V. (VAR uses B * H * W / V for every scale,
which makes every code look dead at the small scales.) At scale k at most B * p_k^2 codes can be hit
per step, so small scales show small percentages by construction.

Shapes: B batch, C = Cvae code width, H W latent size, V codes, K scales, N flattened positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def phi_indices(num_scales: int, num_phi: int) -> list[int]:
    """Index of the phi conv used at each scale (VAR's tick rule); [0,0,1,1,1,2,2,3,3,3] for (10, 4)."""
    if num_phi < 1:
        raise ValueError("num_phi must be >= 1")
    # numpy.linspace's float64 arithmetic, reproduced exactly: scales 2 and 7 of 10 sit exactly halfway
    # between two ticks, and the last-bit rounding of this computation is what sends them to phi 1 and 2
    start = 1 / 3 / num_phi if num_phi == 4 else 1 / 2 / num_phi
    stop = 1 - start
    step = (stop - start) / (num_phi - 1) if num_phi > 1 else 0.0
    ticks = [i * step + start for i in range(num_phi)]
    ticks[-1] = stop
    out = []
    for k in range(num_scales):
        t = k / (num_scales - 1) if num_scales > 1 else 0.0
        dist = [abs(tick - t) for tick in ticks]
        out.append(dist.index(min(dist)))
    return out


def num_phi_for(share: int, num_scales: int) -> int:
    """`phi_share`: 0 = one phi per scale (K), 1 = one phi for all, n > 1 = n partially shared."""
    return num_scales if share == 0 else share


class Phi(nn.Conv2d):
    """3x3 conv C -> C mixed residually: phi(h) = (1 - r) h + r conv(h)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__(dim, dim, 3, padding=1)
        self.ratio = ratio

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.ratio) + super().forward(h_BChw).mul(self.ratio)


def area_down(x_BChw: torch.Tensor, side: int) -> torch.Tensor:
    if x_BChw.shape[-1] == side and x_BChw.shape[-2] == side:
        return x_BChw
    return F.interpolate(x_BChw, size=(side, side), mode="area")


def bicubic_up(x_BChw: torch.Tensor, side: int) -> torch.Tensor:
    if x_BChw.shape[-1] == side and x_BChw.shape[-2] == side:
        return x_BChw
    return F.interpolate(x_BChw, size=(side, side), mode="bicubic", align_corners=False)


def _fp32(device: torch.device):
    """Disable autocast: the quantizer always computes in fp32 (VAR_SPEC §2.7)."""
    return torch.autocast(device_type=device.type, enabled=False)


class MultiScaleQuantizer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        dim: int,
        scales: tuple[int, ...],
        phi_share: int = 4,
        quant_resi: float = 0.5,
        beta: float = 0.25,
        znorm: bool = False,
        code_init: float = -1.0,
        pool_size: int = 8192,
    ) -> None:
        super().__init__()
        self.vocab_size, self.dim, self.scales = vocab_size, dim, tuple(scales)
        self.beta, self.znorm, self.pool_size = beta, znorm, pool_size
        K = len(self.scales)
        n_phi = num_phi_for(phi_share, K)
        self.phi_index = tuple(phi_indices(K, n_phi))
        self.phis = nn.ModuleList(
            [Phi(dim, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity() for _ in range(n_phi)]
        )
        self.embedding = nn.Embedding(vocab_size, dim)
        self.code_init = code_init
        self.init_codebook(code_init)
        self.register_buffer("ema_hits_KV", torch.zeros(K, vocab_size))  # VAR's ema_vocab_hit_SV
        self.register_buffer("ema_calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("hits_V", torch.zeros(vocab_size), persistent=False)
        self._pool_NC: torch.Tensor | None = None
        self.restart_from = "scales"  # where `restart_dead_codes` takes residuals from (see _sample_pool)

    @property
    def side(self) -> int:
        return self.scales[-1]

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    @torch.no_grad()
    def init_codebook(self, code_init: float) -> None:
        """VAR's `eini`: > 0 truncated normal with that std; < 0 uniform(+-|code_init| / V); 0 keeps."""
        w = self.embedding.weight
        if code_init > 0:
            nn.init.trunc_normal_(w, std=code_init)
        elif code_init < 0:
            w.uniform_(-abs(code_init) / self.vocab_size, abs(code_init) / self.vocab_size)

    # -- building blocks ------------------------------------------------------------------------
    def phi(self, k: int, h_BChw: torch.Tensor) -> torch.Tensor:
        return self.phis[self.phi_index[k]](h_BChw)

    def lift(self, k: int, codes_BChw: torch.Tensor) -> torch.Tensor:
        """Scale k's code map (B, C, p_k, p_k) -> its contribution to f_hat (B, C, H, W)."""
        if k < len(self.scales) - 1:
            codes_BChw = bicubic_up(codes_BChw, self.side)
        return self.phi(k, codes_BChw)

    @torch.no_grad()
    def lookup(self, z_NC: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N,) nearest code ids (squared L2; cosine when `znorm`)."""
        e_VC = self.embedding.weight.float()
        z_NC = z_NC.float()
        if self.znorm:
            e_VC = F.normalize(e_VC, dim=-1)
            return torch.cat([(F.normalize(z, dim=-1) @ e_VC.T).argmax(dim=-1) for z in z_NC.split(4096)])
        # argmin_v |z - e_v|^2 = argmax_v (z.e_v - |e_v|^2 / 2), one matmul of [z, -1/2] and [e, |e|^2]
        e_aug = torch.cat([e_VC, e_VC.square().sum(-1, keepdim=True)], dim=-1).T  # (C + 1, V)
        out = []
        for z in z_NC.split(4096):
            z_aug = torch.cat([z, z.new_full((z.shape[0], 1), -0.5)], dim=-1)  # (n, C + 1)
            out.append((z_aug @ e_aug).argmax(dim=-1))
        return torch.cat(out)

    def embed(self, idx_Bl: torch.Tensor, side: int) -> torch.Tensor:
        """(B, p*p) ids -> (B, C, p, p) code vectors."""
        return rearrange(self.embedding(idx_Bl).float(), "b (h w) c -> b c h w", h=side, w=side)

    # -- training forward -------------------------------------------------------------------------
    def forward(
        self, f_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, list[float]]:
        """f -> (straight-through f_hat, [ (B, p_k^2) ids ], VQ loss, per-scale usage %)."""
        B, C, H, W = f_BChw.shape
        assert H == W == self.side, f"latent is {H}x{W}, the last scale is {self.side}"
        K = len(self.scales)
        with _fp32(f_BChw.device):
            f = f_BChw.float()
            f_ng = f.detach()
            f_rest = f_ng.clone()
            f_hat = torch.zeros_like(f)
            loss = f.new_zeros(())
            idx_list, z_pool, hits_KV = [], [], []
            for k, p in enumerate(self.scales):
                z_BChw = area_down(f_rest, p) if k < K - 1 else f_rest
                z_NC = rearrange(z_BChw, "b c h w -> (b h w) c")
                idx_N = self.lookup(z_NC)
                h = self.lift(k, self.embed(rearrange(idx_N, "(b l) -> b l", b=B), p))
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_ng)
                idx_list.append(rearrange(idx_N, "(b l) -> b l", b=B))
                if self.training:
                    z_pool.append(z_NC.detach())
                    hits_KV.append(idx_N.bincount(minlength=self.vocab_size).float())
            loss = loss / K
            f_hat_st = (f_hat.detach() - f_ng) + f
        usages = self._record(hits_KV, z_pool, B) if self.training else self.usage(B)
        return f_hat_st, idx_list, loss, usages

    @torch.no_grad()
    def _record(self, hits_KV: list[torch.Tensor], z_pool: list[torch.Tensor], B: int) -> list[float]:
        hits = torch.stack(hits_KV)
        n = int(self.ema_calls)
        if n == 0:
            self.ema_hits_KV.copy_(hits)
        elif n < 100:
            self.ema_hits_KV.mul_(0.9).add_(hits, alpha=0.1)
        else:
            self.ema_hits_KV.mul_(0.99).add_(hits, alpha=0.01)
        self.ema_calls += 1
        self.hits_V += hits.sum(0)
        self._pool_NC = self._sample_pool(z_pool)
        return self.usage(B)

    def _sample_pool(self, z_pool: list[torch.Tensor]) -> torch.Tensor:
        """Residuals to re-seed dead codes from: `pool_size` rows, drawn uniformly over all positions
        ("positions") or in equal shares from every scale ("scales", with replacement at the small
        scales, which hold only B p_k^2 vectors)."""
        if self.restart_from == "positions":
            z_NC = torch.cat(z_pool)
            return z_NC[torch.randperm(z_NC.shape[0], device=z_NC.device)[: self.pool_size]]
        share = max(1, self.pool_size // len(z_pool))
        return torch.cat([z[torch.randint(z.shape[0], (share,), device=z.device)] for z in z_pool])

    @torch.no_grad()
    def usage(self, batch_size: int) -> list[float]:
        """Per-scale usage %: share of codes with EMA hit count >= 0.08 * B * p_k^2 / V."""
        out = []
        for k, p in enumerate(self.scales):
            margin = 0.08 * batch_size * p * p / self.vocab_size
            out.append(100.0 * float((self.ema_hits_KV[k] >= margin).float().mean()))
        return out

    @torch.no_grad()
    def restart_dead_codes(self, min_hits: int = 1, noise: float = 0.01) -> int:
        """Re-seed codes hit < `min_hits` times since the last call from recent residuals.

        Returns how many codes were moved; the hit counters restart from zero."""
        if self._pool_NC is None:
            return 0
        dead = self.hits_V < min_hits
        n = int(dead.sum())
        if n:
            pool = self._pool_NC
            pick = pool[torch.randint(pool.shape[0], (n,), device=pool.device)]
            pick = pick + noise * pool.std() * torch.randn_like(pick)
            self.embedding.weight.data[dead] = pick.to(self.embedding.weight.dtype)
        self.hits_V.zero_()
        return n

    # -- tokens <-> latents (no gradient) ---------------------------------------------------------
    @torch.no_grad()
    def quantize(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """f -> [ (B, p_k^2) int64 ids ], the same lookups as `forward`."""
        B = f_BChw.shape[0]
        K = len(self.scales)
        with _fp32(f_BChw.device):
            f_rest = f_BChw.float().clone()
            out = []
            for k, p in enumerate(self.scales):
                z_BChw = area_down(f_rest, p) if k < K - 1 else f_rest
                idx_N = self.lookup(rearrange(z_BChw, "b c h w -> (b h w) c"))
                idx_Bl = rearrange(idx_N, "(b l) -> b l", b=B)
                f_rest = f_rest - self.lift(k, self.embed(idx_Bl, p))
                out.append(idx_Bl)
        return out

    def embed_to_fhat(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """[ (B, p_k^2) for the first K' scales ] -> f_hat (B, C, H, W) built from those scales only."""
        if not 1 <= len(idx_list) <= len(self.scales):
            raise ValueError(f"expected 1..{len(self.scales)} token maps, got {len(idx_list)}")
        device = idx_list[0].device
        with _fp32(device):
            f_hat = None
            for k, idx_Bl in enumerate(idx_list):
                p = self.scales[k]
                if idx_Bl.shape[1] != p * p:
                    raise ValueError(f"scale {k}: expected {p * p} tokens, got {idx_Bl.shape[1]}")
                h = self.lift(k, self.embed(idx_Bl, p))
                f_hat = h if f_hat is None else f_hat + h
        return f_hat

    def latent_inputs(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher forcing (§1.5): (B, L - p_1^2, C), for k >= 1 area_down(f_hat after scales < k, p_k)."""
        K = len(self.scales)
        B = idx_list[0].shape[0]
        device = idx_list[0].device
        with _fp32(device):
            f_hat = torch.zeros(B, self.dim, self.side, self.side, device=device)
            inputs = []
            for k in range(K - 1):
                # always interpolated here (k < K - 1)
                f_hat = f_hat + self.phi(k, bicubic_up(self.embed(idx_list[k], self.scales[k]), self.side))
                nxt = area_down(f_hat, self.scales[k + 1])
                inputs.append(rearrange(nxt, "b c h w -> b (h w) c"))
            if not inputs:
                return torch.zeros(B, 0, self.dim, device=device)
            return torch.cat(inputs, dim=1)

    def latent_step(
        self, k: int, f_hat: torch.Tensor | None, codes_BlC: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference step k: f_hat += lift(codes); return (f_hat, next input (B, p_{k+1}^2, C) or None)."""
        K = len(self.scales)
        p = self.scales[k]
        with _fp32(codes_BlC.device):
            h = rearrange(codes_BlC.float(), "b (h w) c -> b c h w", h=p, w=p)
            contrib = self.lift(k, h)  # the last scale is not interpolated
            f_hat = contrib if f_hat is None else f_hat.float() + contrib
            if k == K - 1:
                return f_hat, None
            nxt = area_down(f_hat, self.scales[k + 1])
            return f_hat, rearrange(nxt, "b c h w -> b (h w) c")
