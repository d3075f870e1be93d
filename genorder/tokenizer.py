"""The Tokenizer interface: images <-> lists of per-scale token maps.

Conventions (all tokenizers):
  * images are float tensors (B, C, H, W) in [-1, 1];
  * token maps are a list with one LongTensor (B, p_k * p_k) per scale, row-major, coarse to fine,
    with p_k = `self.scales[k]`; a single-scale tokenizer returns a list of one (B, 256) tensor;
  * `codebook_size` is V (token ids are in [0, V)).

Next-scale prediction needs continuous teacher-forcing inputs (VAR_SPEC §1.5). A tokenizer that can
provide them implements the three `latent_*` methods; the core never needs to know why.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from genorder.config import ComponentConfig


class Tokenizer(nn.Module, ABC):
    Config: type[ComponentConfig]

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
