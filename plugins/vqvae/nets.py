"""Taming/LDM-style convolutional Encoder and Decoder of the multi-scale VQVAE (VAR_SPEC §1.2, §1.3).

Encoder: conv_in -> per level (num_res_blocks x ResBlock [+ Attn at the lowest level], Downsample
except at the last level) -> mid (ResBlock, Attn, ResBlock) -> GN, SiLU, conv_out to Cvae.
Decoder mirrors it with `num_res_blocks` blocks per level (VAR uses 3 = encoder's 2 + 1) and
nearest-x2 + conv Upsample. With VAR's 256 px settings (ch 160, ch_mult (1,1,2,2,4), Cvae 32) the
two networks hold 44.11 M and 64.65 M parameters.

Shapes: B batch, C channels, H W spatial size; `x_BChw` is a feature map at any level.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32, eps 1e-6, affine); fewer groups (min(32, C), a divisor of C) for tiny widths."""
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> dropout -> conv3x3, plus a (1x1 conv) shortcut."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BChw)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x_BChw) + h


class Attn(nn.Module):
    """Single-head spatial self-attention: GN -> 1x1 qkv -> softmax(q.k / sqrt(C)) -> 1x1 proj, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h, w = x_BChw.shape[-2:]
        qkv = rearrange(self.qkv(self.norm(x_BChw)), "b (three c) h w -> three b 1 (h w) c", three=3)
        o_BLc = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # scale 1/sqrt(C), one head
        o_BChw = rearrange(o_BLc, "b 1 (h w) c -> b c h w", h=h, w=w)
        return x_BChw + self.proj_out(o_BChw)


class Downsample(nn.Module):
    """Zero-pad right and bottom by 1 (asymmetric), then a 3x3 stride-2 conv with no padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BChw, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BChw, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """(B, in_channels, H, W) -> (B, z_channels, H / 2**(len(ch_mult)-1), same)."""

    def __init__(
        self,
        in_channels: int,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        dropout: float = 0.0,
        attn: bool = True,
        mid_attn: bool = True,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.levels = nn.ModuleList()
        c_in = ch
        last = len(ch_mult) - 1
        for i, mult in enumerate(ch_mult):
            c_out = ch * mult
            level = nn.Module()
            level.blocks = nn.ModuleList()
            level.attns = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.blocks.append(ResBlock(c_in, c_out, dropout))
                c_in = c_out
                if attn and i == last:
                    level.attns.append(Attn(c_in))
            level.down = Downsample(c_in) if i != last else nn.Identity()
            self.levels.append(level)
        self.mid_block1 = ResBlock(c_in, c_in, dropout)
        self.mid_attn = Attn(c_in) if mid_attn else nn.Identity()
        self.mid_block2 = ResBlock(c_in, c_in, dropout)
        self.norm_out = norm(c_in)
        self.conv_out = nn.Conv2d(c_in, z_channels, 3, padding=1)

    def forward(self, x_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_BChw)
        for level in self.levels:
            for j, block in enumerate(level.blocks):
                h = block(h)
                if len(level.attns):
                    h = level.attns[j](h)
            h = level.down(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, out_channels, h * 2**(len(ch_mult)-1), same), unclamped."""

    def __init__(
        self,
        out_channels: int,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        dropout: float = 0.0,
        attn: bool = True,
        mid_attn: bool = True,
    ) -> None:
        super().__init__()
        last = len(ch_mult) - 1
        c_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c_in, 3, padding=1)
        self.mid_block1 = ResBlock(c_in, c_in, dropout)
        self.mid_attn = Attn(c_in) if mid_attn else nn.Identity()
        self.mid_block2 = ResBlock(c_in, c_in, dropout)
        self.levels = nn.ModuleList()  # coarse (index 0 = lowest resolution) to fine
        for i in reversed(range(len(ch_mult))):
            c_out = ch * ch_mult[i]
            level = nn.Module()
            level.blocks = nn.ModuleList()
            level.attns = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.blocks.append(ResBlock(c_in, c_out, dropout))
                c_in = c_out
                if attn and i == last:
                    level.attns.append(Attn(c_in))
            level.up = Upsample(c_in) if i != 0 else nn.Identity()
            self.levels.append(level)
        self.norm_out = norm(c_in)
        self.conv_out = nn.Conv2d(c_in, out_channels, 3, padding=1)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z_BChw)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h)))
        for level in self.levels:
            for j, block in enumerate(level.blocks):
                h = block(h)
                if len(level.attns):
                    h = level.attns[j](h)
            h = level.up(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def last_layer(self) -> torch.Tensor:
        """The output conv weight (the adaptive GAN weight compares gradient norms here)."""
        return self.conv_out.weight


def init_conv_weights(module: nn.Module, gain: float = 0.5) -> None:
    """Xavier-normal (gain 0.5, as in FoundationVision/vaex) for every conv, zero biases; GN 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def downsample_factor(ch_mult: tuple[int, ...]) -> int:
    """Spatial reduction of the encoder: 2 ** (number of levels - 1)."""
    return int(math.pow(2, len(ch_mult) - 1))
