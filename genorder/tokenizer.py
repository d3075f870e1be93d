"""The Tokenizer interface: images <-> lists of per-scale token maps.

Conventions (all tokenizers):
  * images are float tensors (B, C, H, W) in [-1, 1];
  * token maps are a list with one LongTensor (B, p_k * p_k) per scale, row-major, coarse to fine,
    with p_k = `self.scales[k]`; a single-scale tokenizer returns a list of one (B, 256) tensor;
  * `codebook_size` is V (token ids are in [0, V)).

Next-scale prediction needs continuous teacher-forcing inputs (VAR_SPEC §1.5). A tokenizer that can
provide them implements the three `latent_*` methods; the core never needs to know why.

Training (`genorder train-tokenizer`): a tokenizer that can be trained subclasses
`TrainableTokenizer`, whose two methods the core loop (`genorder.tokenizer_training`) calls; the
loop owns the data, the budget, the learning-rate schedule, logs, checkpoints, the held-out
metrics and the reconstruction grid, the tokenizer owns its losses and optimisers.

Default presets (a declared capability, never a name the CLI knows): a tokenizer class lists in
`default_for` the (kind, channels, image_size) it is the default tokenizer for, where kind is an
order's `tokenizer_kind`; `genorder.tokenizer_training.default_tokenizer` picks the preset for a
dataset's channels and size from them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from genorder.budget import Budget
from genorder.config import ComponentConfig


@dataclass(frozen=True)
class DefaultFor:
    """A tokenizer preset declares itself the default for an order kind at one image shape."""

    kind: str  # an order's `tokenizer_kind`: "single-scale" or "multi-scale"
    channels: int
    image_size: int
    device: str | None = None  # "cpu": the default on that device type only (it wins there); None: any device


class Tokenizer(nn.Module, ABC):
    Config: type[ComponentConfig]
    #: the (order kind, channels, image size) this preset is the default tokenizer for
    default_for: ClassVar[tuple[DefaultFor, ...]] = ()
    #: names of submodules that may run in bf16 at inference (`genorder bench` casts them); the rest stays fp32
    low_precision_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__()
        self.config = config

    # -- shape facts -------------------------------------------------------------------------
    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """V, the number of codes."""

    @property
    @abstractmethod
    def scales(self) -> tuple[int, ...]:
        """Side p_k of each token map, coarse to fine; (16,) for a single-scale tokenizer."""

    @property
    @abstractmethod
    def image_size(self) -> int:
        """H = W of the images it encodes."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """C of the images (1 for Fashion-MNIST, 3 for RGB)."""

    @property
    def latent_dim(self) -> int:
        """Cvae, the code vector width (32 in VAR). Needed only for `latent_*`."""
        raise NotImplementedError(f"{type(self).__name__} has no continuous latent")

    # -- the codec ---------------------------------------------------------------------------
    @abstractmethod
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) in [-1, 1] -> [ (B, p_k*p_k) int64 for each scale k ]."""

    @abstractmethod
    def decode(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """[ (B, p_k*p_k) for k < K' ] -> (B, C, H, W) in [-1, 1].

        K' may be smaller than the number of scales: the image is then reconstructed from the
        first K' scales only (what `genorder reconstruct` shows)."""

    # -- what a next-scale order needs (VAR_SPEC §1.5); optional -------------------------------
    def latent_inputs(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Teacher forcing: (B, L - p_1^2, Cvae). For k >= 1, the running reconstruction f_hat
        after scales < k, area-downsampled to p_k x p_k and flattened row-major."""
        raise NotImplementedError(f"{type(self).__name__} does not provide next-scale inputs")

    def latent_step(
        self, k: int, f_hat: torch.Tensor | None, codes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One inference step: add scale k's codes to f_hat and return (f_hat, next input).

        codes: (B, p_k*p_k, Cvae) code vectors (hard lookups, or soft mixtures for `more_smooth`).
        f_hat: (B, Cvae, h, w) or None at k = 0. next input: (B, p_{k+1}^2, Cvae), None at the end."""
        raise NotImplementedError(f"{type(self).__name__} does not provide next-scale inputs")

    def latent_decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        """(B, Cvae, h, w) accumulated latent -> (B, C, H, W) image in [-1, 1]."""
        raise NotImplementedError(f"{type(self).__name__} does not provide next-scale inputs")

    def code_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """(...,) int64 -> (..., Cvae) codebook rows."""
        raise NotImplementedError(f"{type(self).__name__} has no codebook vectors")

    @property
    def codebook(self) -> torch.Tensor:
        """(V, Cvae) code vectors, for soft (`more_smooth`) lookups."""
        raise NotImplementedError(f"{type(self).__name__} has no codebook vectors")


class TokenizerTrainConfig(ComponentConfig):
    """What the core training loop reads (`[train]` of `genorder train-tokenizer`); a trainable
    tokenizer's `TrainConfig` subclasses it with its own loss and optimiser options."""

    batch_size: int = Field(32, ge=1, description="images per step")
    lr: float = Field(3e-4, gt=0, description="peak learning rate of every optimiser")
    warmup: float = Field(0.02, ge=0, lt=1, description="fraction of the budget with a linear lr warmup")
    final_lr: float = Field(0.3, ge=0, le=1, description="lr at the end as a fraction of the peak (cosine)")
    budget: Budget = Field(default_factory=lambda: Budget(steps=300), description="when to stop")
    checkpoint_every: int | None = Field(500, ge=1, description="steps between checkpoints (None: end only)")
    log_every: int = Field(20, ge=1, description="steps between log records")
    eval_images: int = Field(500, ge=1, description="held-out images for the final PSNR and codebook usage")
    eval_prefix_images: int = Field(
        100, ge=1, description="of those, images also decoded from every prefix of scales (PSNR per k)"
    )
    grid_images: int = Field(8, ge=1, description="rows of reconstructions.png (spread over the classes)")
    seed: int = Field(0, ge=-(2**40), le=2**40, description="seed of the batch order (and of the tokenizer's own randomness)")
    device: str = Field("auto", description='"auto" (cuda if available), "cpu", "cuda", "cuda:1", ...')
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on cuda")
    nonfinite_streak: int = Field(3, ge=0, description="non-finite steps in a row skipped before the run stops")
    nonfinite_total: int = Field(10, ge=0, description="non-finite steps in all skipped before the run stops")


class TrainableTokenizer(Tokenizer):
    """A tokenizer `genorder train-tokenizer` can train (the training protocol).

    The core loop (`genorder.tokenizer_training.train_tokenizer`) moves the tokenizer to the device,
    calls `configure_training(config)` once, then per step sets the scheduled learning rate on every
    param group of the optimisers it returned and calls `training_step(images, step, fraction)`,
    which does the forward, the losses, the backward and the optimiser steps and returns its metrics
    (at least "loss"). `training_summary()` adds to the final metrics."""

    #: the pydantic config of the `[train]` section (a subclass of TokenizerTrainConfig)
    TrainConfig: ClassVar[type[TokenizerTrainConfig]] = TokenizerTrainConfig

    @abstractmethod
    def configure_training(self, config: TokenizerTrainConfig) -> list[torch.optim.Optimizer]:
        """Called once, on the training device, before the first step: build and return the
        optimisers (their learning rates are then set by the core's schedule)."""

    @abstractmethod
    def training_step(self, images: torch.Tensor, step: int, fraction: float) -> dict[str, Any]:
        """One optimisation step on (B, C, H, W) images in [-1, 1]; `step` counts from 1 and
        `fraction` is the share of the budget spent. Returns metrics with at least "loss"."""

    def training_summary(self) -> dict[str, Any]:
        """Extra entries for metrics.json at the end of training (e.g. codes restarted)."""
        return {}
