"""genorder-pixel: an example third-party plugin that adds the "pixel" tokenizer.

The tokenizer average-pools an image to a `grid` x `grid` map and quantises each pixel value
uniformly into `levels` bins per channel. For C channels the token id is the mixed-radix number
of the per-channel bins (channel 0 most significant), so the codebook has `levels ** C` entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, model_validator

from genorder import ComponentConfig, Tokenizer, UserError, hookimpl

__all__ = ["PixelTokenizer", "PixelTokenizerConfig", "register_tokenizers"]


class PixelTokenizerConfig(ComponentConfig):
    grid: int = Field(default=16, gt=0)  # side of the token map
    levels: int = Field(default=16, ge=2, le=256)  # quantisation bins per channel
    channels: int = Field(default=1, ge=1, le=4)
    image_size: int = Field(default=32, gt=0)

    @model_validator(mode="after")
    def _grid_divides_image(self) -> PixelTokenizerConfig:
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} must be a multiple of grid {self.grid}")
        return self


class PixelTokenizer(Tokenizer):
    """Average-pooled pixels, uniformly quantised; one scale, no training, no parameters."""

    Config = PixelTokenizerConfig
    config: PixelTokenizerConfig

    def __init__(self, config: PixelTokenizerConfig) -> None:
        super().__init__(config)
        radix = [config.levels ** (config.channels - 1 - c) for c in range(config.channels)]
        self.register_buffer(
            "radix", torch.tensor(radix, dtype=torch.int64), persistent=False
        )  # (C,)

    @property
    def codebook_size(self) -> int:
        return self.config.levels**self.config.channels

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.config.grid,)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def step(self) -> float:
        """Width of one quantisation bin in [-1, 1] units."""
        return 2.0 / self.config.levels

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) in [-1, 1] -> [ (B, grid*grid) int64 ]."""
        cfg = self.config
        if (
            images.ndim != 4
            or images.shape[1] != cfg.channels
            or images.shape[-1] != cfg.image_size
        ):
            raise UserError(
                f"pixel tokenizer expects (B, {cfg.channels}, {cfg.image_size}, {cfg.image_size}) "
                f"images, got {tuple(images.shape)}; set tokenizer.channels / tokenizer.image_size"
            )
        pooled = F.adaptive_avg_pool2d(images.float(), cfg.grid)  # (B, C, g, g)
        bins = ((pooled + 1.0) / self.step).floor().long().clamp_(0, cfg.levels - 1)  # (B, C, g, g)
        ids = (bins * self.radix.view(1, -1, 1, 1)).sum(dim=1)  # (B, g, g)
        return [rearrange(ids, "b h w -> b (h w)")]

    def decode(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """[ (B, grid*grid) ] -> (B, C, H, W) in [-1, 1]: bin centres, nearest-upsampled."""
        cfg = self.config
        ids = rearrange(tokens[0], "b (h w) -> b 1 h w", h=cfg.grid)  # (B, 1, g, g)
        bins = (ids // self.radix.view(1, -1, 1, 1)) % cfg.levels  # (B, C, g, g)
        values = -1.0 + (bins.float() + 0.5) * self.step  # bin centres
        return F.interpolate(values, size=cfg.image_size, mode="nearest")  # (B, C, H, W)


@hookimpl
def register_tokenizers(register):
    register("pixel", PixelTokenizer)
