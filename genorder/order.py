"""The Order interface: how a token layout becomes training examples and a generation loop.

An order differs from another only in what it tells the shared machinery (design principle):
  * `layout(tokenizer)`: which token maps it generates (`TokenLayout`);
  * `groups(layout)`: the attention pattern as group ids over the S sequence positions
    (key j visible from query i iff groups[j] <= groups[i]; see `genorder.layout`);
  * `build_stem(...)`: the module that turns the order's inputs into (B, S, C) vectors (token or
    latent embeddings, positions, levels, a start token from the condition);
  * `training_batch(...)`: inputs and per-position targets for teacher forcing (-100 = no loss);
  * `generate(...)`: the step loop, built from the shared helpers exported by `genorder`
    (`cfg_labels`, `double`, `sample_step`, `inference`, `make_generator`; module
    `genorder.generation`) and the backbone's static KV cache (`GenModel.new_cache(batch)` returns a
    `genorder.KVCache`; `model(inputs, labels, start=i, cache=cache)` runs positions
    [i, i + n) against every key cached so far).

What the shared machinery needs to know about an order beyond these methods is a declared
capability (class attributes, read by `genorder bench`, FLOP counting and `genorder.testing`,
never the order's name):
  * `tokenizer_kind`: "single-scale" or "multi-scale" (several scales, with `Tokenizer.latent_*`
    when the order feeds latents); it may depend on the config (a property);
  * `kv_cache_option`: the name of a bool Config field that switches KV-cached sampling
    (`--kv-cache/--no-kv-cache` of `genorder bench` sets it), or None;
  * `uses_kv_cache`: whether this instance samples with the cache (one attention group per step,
    each step's queries see every cached key); it decides how generation FLOPs are counted and
    whether the AdaLN modulations are computed once per generation;
  * `reference_baseline`: `genorder bench` lists it first and takes speed ratios against it by
    default (the VAR paper's raster AR baseline declares it);
  * `can_edit(layout, keep)` / `edit(...)`: zero-shot editing (`genorder edit`); `can_edit` returns
    None or the reason this order cannot regenerate the tokens outside `keep` (default: cannot);
  * `compare_default`: whether `genorder compare` trains this order when no `--orders` is given
    (built-in orders only; the VAR paper's three declare True, the orders added since declare
    False, so `compare --orders all` is how every registered order is run);
  * `uses_training_progress`: when True, the trainer calls `set_training_progress(fraction)` with
    the fraction of the budget spent before each `training_batch` (an order whose teacher forcing
    changes over the run, e.g. RAR's annealed permutations); default False, never called.

The backbone (`genorder.GenModel`), the trainer, the sampler and the budget are shared.

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
    generation steps), so that position and level embeddings can be sliced.

    Weight decay: biases and every parameter with ndim <= 1 never take weight decay; `no_decay`
    adds parameters by name (a name matches when it is a substring of the parameter's name), e.g.
    the (1, L, C) position tables. It may be empty; every name listed must match a parameter
    (`genorder.testing` checks it, so a typo cannot silently decay a table)."""

    #: names of parameters that take no weight decay, besides biases and 1-D tensors
    no_decay: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, inputs: Any, cond: torch.Tensor, start: int = 0) -> torch.Tensor: ...

    def reset_parameters(self) -> None:
        """(Re-)initialise the stem's own tables. `GenModel` first initialises every Linear and
        Embedding (trunc-normal, std `genorder.init_std(C)`), then calls this; override it for
        bare `nn.Parameter` tables (use `init_std(width)` for VAR's convention)."""


class Order(ABC):
    """A generation order; see the module docstring for the methods and the declared capabilities."""

    Config: type[ComponentConfig]
    #: "multi-scale" orders need a tokenizer with several scales and `latent_*` methods
    tokenizer_kind: str = "single-scale"
    #: name of the bool Config field that switches KV-cached sampling, or None (no switch)
    kv_cache_option: str | None = None
    #: `genorder bench` compares the other orders' speed against this one by default
    reference_baseline: bool = False
    #: `genorder compare` trains this (built-in) order by default, without --orders
    compare_default: bool = True
    #: the trainer tells this order the fraction of the budget spent (`set_training_progress`)
    uses_training_progress: bool = False

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    @property
    def uses_kv_cache(self) -> bool:
        """True when `generate` samples with the KV cache: one attention group per step, whose
        queries see every key cached so far. Default: the value of `kv_cache_option` (False when
        the order declares none); an order that always caches overrides this with True."""
        if self.kv_cache_option is None:
            return False
        return bool(getattr(self.config, self.kv_cache_option))

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

    def set_training_progress(self, fraction: float) -> None:
        """The fraction in [0, 1] of the training budget spent, given by the trainer before each
        `training_batch` when `uses_training_progress` is True. Default: ignored."""

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise `UserError` when the tokenizer cannot serve this order."""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of this order for reports and run records: {"order": the class
        name, **every Config field with its value}. Override it to add facts that are not config
        fields (keep the values JSON-serialisable); the registry name is recorded separately."""
        return {"order": type(self).__name__, **self.config.model_dump()}
