"""The Order interface: how a token layout becomes training examples and a generation loop.

An order differs from another only in what it tells the shared machinery (design principle):
  * `layout(tokenizer)`: which token maps it generates (`TokenLayout`);
  * `groups(layout)`: the attention pattern as group ids over the S sequence positions
    (key j visible from query i iff groups[j] <= groups[i]; see `genorder.layout`);
  * `build_stem(...)`: the module that turns the order's inputs into (B, S, C) vectors (token or
    latent embeddings, positions, levels, a start token from the condition);
  * `training_batch(...)`: inputs and per-position targets for teacher forcing (-100 = no loss);
  * `generate(...)`: the step loop, built from the shared helpers in `genorder.generation`
    (CFG batch doubling, KV cache, sampler calls, progress callbacks, seeding).

The backbone (`genorder.model.GenModel`), the trainer, the sampler and the budget are shared.

Shapes: B batch, S sequence positions fed to the backbone, L tokens of the layout, V codebook size,
C backbone width.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from genorder.config import ComponentConfig
from genorder.layout import TokenLayout

if TYPE_CHECKING:
    from genorder.model import GenModel
    from genorder.sampler import Sampler
    from genorder.tokenizer import Tokenizer

Progress = Callable[[int, int], None]  # (steps done, steps total)
IGNORE = -100  # target value of positions that carry no loss


@dataclass
class TrainBatch:
    inputs: Any  # what the order's stem takes: a tensor or a dict of tensors, batch first
    targets: torch.Tensor  # (B, S) int64 token ids, IGNORE where no loss is taken
    levels: torch.Tensor | None = None  # (S,) scale index of each target position (-1: none), for per-scale metrics


class Stem(nn.Module, ABC):
    """The order-specific input layer: `forward(inputs, cond, start) -> (B, n, C)`.

    `cond` (B, C) is the class embedding (the null class for dropped / unconditional rows);
    `start` is the sequence offset of the first position in `inputs` (non-zero in KV-cached
    generation steps), so that position and level embeddings can be sliced."""

    #: names of parameters that take no weight decay, besides biases and 1-D tensors
    no_decay: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, inputs: Any, cond: torch.Tensor, start: int = 0) -> torch.Tensor: ...


class Order(ABC):
    Config: type[ComponentConfig]
    #: "multi-scale" orders need a tokenizer with several scales and `latent_*` methods
    tokenizer_kind: str = "single-scale"

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    @abstractmethod
    def layout(self, tokenizer: Tokenizer) -> TokenLayout:
        """The token maps this order generates, from the tokenizer's scales."""

    @abstractmethod
    def groups(self, layout: TokenLayout) -> torch.Tensor:
        """(S,) int64 attention group of each sequence position (S may exceed L, e.g. a class token)."""

    @abstractmethod
    def num_steps(self, layout: TokenLayout) -> int:
        """Number of sequential backbone calls `generate` makes (10, 256, 8, ...)."""

    @abstractmethod
    def build_stem(self, tokenizer: Tokenizer, layout: TokenLayout, width: int) -> Stem:
        """The order's input layer for a backbone of width C."""

    @abstractmethod
    def training_batch(
        self, tokens: list[torch.Tensor], tokenizer: Tokenizer, generator: torch.Generator | None
    ) -> TrainBatch:
        """Teacher forcing: per-scale tokens [(B, p_k^2)] -> stem inputs and (B, S) targets."""

    @abstractmethod
    @torch.no_grad()
    def generate(
        self,
        model: GenModel,
        tokenizer: Tokenizer,
        labels: torch.Tensor,
        sampler: Sampler,
        generator: torch.Generator | None,
        progress: Progress | None = None,
    ) -> list[torch.Tensor]:
        """Sample token maps [(B, p_k^2)] for class `labels` (B,) (the null class = unconditional)."""

    # -- capability: editing (zero-shot in-/out-painting, class-conditional editing) -------------
    def can_edit(self, layout: TokenLayout, keep: list[torch.Tensor]) -> str | None:
        """None when `edit` can regenerate the tokens outside `keep`; otherwise the reason it cannot.

        `keep`: one (p_k^2,) bool map per scale of `layout` (True = the image's own token is kept),
        the same for every image of the batch (`genorder.editing.keep_maps` derives it from a mask).
        An order that does not override this cannot edit."""
        return f"{type(self).__name__} does not declare editing (Order.can_edit / Order.edit)"

    def edit(
        self,
        model: GenModel,
        tokenizer: Tokenizer,
        tokens: list[torch.Tensor],
        keep: list[torch.Tensor],
        labels: torch.Tensor,
        sampler: Sampler,
        generator: torch.Generator | None,
        progress: Progress | None = None,
    ) -> list[torch.Tensor]:
        """Token maps [(B, p_k^2)] equal to `tokens` (the images' own, from `tokenizer.encode`)
        wherever `keep` is True and generated for class `labels` elsewhere. Only called when
        `can_edit` returned None."""
        raise NotImplementedError(f"{type(self).__name__} cannot edit")

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise `UserError` when the tokenizer cannot serve this order."""

    def describe(self) -> dict[str, Any]:
        return {"order": type(self).__name__, **self.config.model_dump()}
