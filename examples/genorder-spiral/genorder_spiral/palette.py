"""`palette`: a trainable single-scale tokenizer, the smallest example of `genorder.TrainableTokenizer`.

encode: average-pool the image to a `grid` x `grid` map of colours and replace each cell by the
nearest of V learned palette colours (its id); decode: look the ids up and upsample (nearest).
Training (`genorder train-tokenizer --tokenizer palette --dataset imagefolder:PATH`): online k-means
by gradient, loss = mean |palette[id] - cell colour|^2, with the palette first set to cell colours
drawn from the first batch (a data-dependent init) and codes no cell chose re-seeded the same way
every `reseed_every` steps. The core loop owns the budget, the learning-rate schedule, checkpoints,
metrics and the reconstruction grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, model_validator
from torch import nn

from genorder import ComponentConfig, TokenizerTrainConfig, TrainableTokenizer


class PaletteConfig(ComponentConfig):
    channels: int = Field(3, ge=1, le=3, description="image channels")
    image_size: int = Field(32, gt=0, description="H = W of the images")
    grid: int = Field(8, gt=0, description="side of the token map; divides image_size")
    codebook_size: int = Field(64, ge=2, description="V, the palette size")

    @model_validator(mode="after")
    def _divides(self) -> PaletteConfig:
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} is not a multiple of grid {self.grid}")
        return self


class PaletteTrainConfig(TokenizerTrainConfig):
    reseed_every: int = Field(10, ge=0, description="steps between re-seeding unused codes (0: never)")


class PaletteTokenizer(TrainableTokenizer):
    """Learned colour palette over a pooled grid (single scale, V codes)."""

    Config = PaletteConfig
    TrainConfig = PaletteTrainConfig

    def __init__(self, config: PaletteConfig) -> None:
        super().__init__(config)
        self.palette = nn.Parameter(torch.rand(config.codebook_size, config.channels) * 2 - 1)  # (V, C)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.config.grid,)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    def _cells(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, g*g, C) mean colour of every grid cell."""
        pooled = F.adaptive_avg_pool2d(images.float(), self.config.grid)
        return rearrange(pooled, "b c h w -> b (h w) c")

    def _nearest(self, cells_BNC: torch.Tensor) -> torch.Tensor:
        d = (cells_BNC[..., None, :] - self.palette.detach()).square().sum(-1)  # (B, N, V)
        return d.argmin(-1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self._nearest(self._cells(images))]

    @torch.no_grad()
    def decode(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        g = self.config.grid
        colours = rearrange(self.palette[tokens[-1]], "b (h w) c -> b c h w", h=g)
        return F.interpolate(colours, size=self.image_size, mode="nearest").clamp(-1, 1)

    # -- the training protocol -------------------------------------------------------------------
    def configure_training(self, config: PaletteTrainConfig) -> list[torch.optim.Optimizer]:
        self._train_cfg = config
        self._opt = torch.optim.Adam([self.palette], lr=config.lr)
        self._reseeded = 0
        return [self._opt]

    @torch.no_grad()
    def _reseed(self, cells_NC: torch.Tensor, codes: torch.Tensor) -> int:
        if len(codes):
            pick = torch.randint(0, len(cells_NC), (len(codes),), device=cells_NC.device)
            self.palette[codes] = cells_NC[pick]
        return len(codes)

    def training_step(self, images: torch.Tensor, step: int, fraction: float) -> dict[str, Any]:
        cells_NC = self._cells(images).flatten(0, 1)  # (B*g*g, C)
        every = self._train_cfg.reseed_every
        if step == 1:
            self._reseeded += self._reseed(cells_NC, torch.arange(self.codebook_size, device=cells_NC.device))
        idx = self._nearest(cells_NC)
        loss = (self.palette[idx] - cells_NC).square().mean()
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        self._opt.step()
        if every and step % every == 0:
            used = torch.zeros(self.codebook_size, dtype=torch.bool, device=idx.device)
            used[idx] = True
            self._reseeded += self._reseed(cells_NC, torch.nonzero(~used).flatten())
        return {"loss": float(loss.detach()), "codes_used": int(idx.unique().numel())}

    def training_summary(self) -> dict[str, Any]:
        return {"codes_reseeded": self._reseeded}
