"""Stub tokenizers and tiny helpers for testing plugins (`genorder.testing`): tokenizers that expose
only what orders may use.

`TinyCodebookTokenizer` has the shape facts every order needs (scales, codebook_size, image_size,
channels) and a toy codec (patch-mean quantisation), and nothing else: an order that reaches for
`latent_*` on it fails. `TinyLatentTokenizer` adds a random codebook and VAR-style `latent_*`
methods (residual accumulation at the finest scale, area downsampling), enough for next-scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genorder.config import ComponentConfig
from genorder.model import BackboneConfig
from genorder.tokenizer import Tokenizer


class TinyCodebookTokenizer(Tokenizer):
    """Scales (p_1, ..., p_K) of token maps over V codes; no continuous latent."""

    def __init__(
        self, scales=(4,), codebook_size: int = 16, image_size: int = 8, channels: int = 1
    ) -> None:
        super().__init__(ComponentConfig())
        self._scales = tuple(scales)
        self._V, self._size, self._ch = codebook_size, image_size, channels

    @property
    def codebook_size(self) -> int:
        return self._V

    @property
    def scales(self) -> tuple[int, ...]:
        return self._scales

    @property
    def image_size(self) -> int:
        return self._size

    @property
    def channels(self) -> int:
        return self._ch

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Patch means over channels, quantised into V bins, per scale."""
        gray_B1HW = images.mean(dim=1, keepdim=True)
        out = []
        for p in self._scales:
            m_Bpp = F.adaptive_avg_pool2d(gray_B1HW, p)[:, 0]
            ids = ((m_Bpp.clamp(-1, 1) + 1) / 2 * (self._V - 1)).round().long()
            out.append(rearrange(ids, "b h w -> b (h w)"))
        return out

    def decode(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        p = self._scales[len(tokens) - 1]
        ids_Bpp = rearrange(tokens[-1], "b (h w) -> b 1 h w", h=p).float()
        img = ids_Bpp / (self._V - 1) * 2 - 1
        img = F.interpolate(img, size=self._size, mode="nearest")
        return img.expand(-1, self._ch, -1, -1)


class TinyLatentTokenizer(TinyCodebookTokenizer):
    """Multi-scale stub with a fixed random codebook and the three `latent_*` methods."""

    def __init__(self, scales=(1, 2, 4), codebook_size: int = 16, latent_dim: int = 4, **kw):
        super().__init__(scales, codebook_size, **kw)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("_codebook", torch.randn(codebook_size, latent_dim, generator=g))

    @property
    def latent_dim(self) -> int:
        return self._codebook.shape[1]

    @property
    def codebook(self) -> torch.Tensor:
        return self._codebook

    def code_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        return self._codebook[idx]

    def latent_step(self, k, f_hat, codes):
        p, P = self._scales[k], self._scales[-1]
        h = rearrange(codes, "b (h w) c -> b c h w", h=p)
        h = F.interpolate(h, size=(P, P), mode="nearest")
        f_hat = h if f_hat is None else f_hat + h
        if k + 1 == len(self._scales):
            return f_hat, None
        nxt = F.interpolate(f_hat, size=self._scales[k + 1], mode="area")
        return f_hat, rearrange(nxt, "b c h w -> b (h w) c")

    def latent_inputs(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        f_hat, ins = None, []
        for k, idx in enumerate(tokens):
            f_hat, nxt = self.latent_step(k, f_hat, self.code_vectors(idx))
            if nxt is not None:
                ins.append(nxt)
        return torch.cat(ins, dim=1)

    def latent_decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        img = F.interpolate(f_hat.mean(dim=1, keepdim=True), size=self._size, mode="nearest")
        return img.tanh().expand(-1, self._ch, -1, -1)


def tiny_backbone(**overrides) -> BackboneConfig:
    """depth 2, width 64, 2 heads, no drop-path: fast on a CPU."""
    return BackboneConfig(**{"depth": 2, "width": 64, "heads": 2, "drop_path": 0.0, **overrides})


KNOWN_KINDS = ("single-scale", "multi-scale")


def tokenizer_for(order, scales_single=(4,), scales_multi=(1, 2, 4), codebook_size: int = 16):
    """The smallest stub tokenizer that serves `order` (by its `tokenizer_kind`): a single-scale
    codebook stub, or a multi-scale stub with VAR-style `latent_*` methods."""
    if order.tokenizer_kind not in KNOWN_KINDS:
        raise ValueError(f"no stub tokenizer for tokenizer_kind={order.tokenizer_kind!r}; known: {KNOWN_KINDS}")
    if order.tokenizer_kind == "multi-scale":
        return TinyLatentTokenizer(scales_multi, codebook_size)
    return TinyCodebookTokenizer(scales_single, codebook_size)


def masked_ce(logits_BSV: torch.Tensor, targets_BS: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over targets != IGNORE (-100)."""
    logits_NV = logits_BSV.flatten(0, 1).float()
    return F.cross_entropy(logits_NV, targets_BS.flatten(), ignore_index=-100)


def train_steps(model, order, tokenizer, tokens, labels, steps: int, lr=3e-3, seed=0) -> list:
    """Plain AdamW teacher forcing for `steps` steps on one fixed batch; returns the losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        batch = order.training_batch(tokens, tokenizer, g)
        loss = masked_ce(model(batch.inputs, labels), batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


class CallRecorder(nn.Module):
    """Wraps a GenModel for `Order.generate`: records every forward's (inputs, start, cached).
    Forwards anything else an order reads (`null_class`, `num_classes`, `vocab`, `seq_len`, ...)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[object, int, bool]] = []

    @property
    def null_class(self) -> int:
        return self.model.null_class

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def new_cache(self, *args, **kwargs):
        return self.model.new_cache(*args, **kwargs)

    def forward(self, inputs, labels, start=0, cache=None):
        fed = inputs.clone() if isinstance(inputs, torch.Tensor) else inputs
        self.calls.append((fed, start, cache is not None))
        return self.model(inputs, labels, start=start, cache=cache)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run with one intra-op thread: the tiny test models gain nothing from more, and on a shared
    2-core machine extra OpenMP threads slow them down by an order of magnitude."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def tensor_dataset(images_uint8: torch.Tensor, labels: torch.Tensor, class_names: list[str] | None = None):
    """An in-memory `genorder.data.ImageDataset` of (N, C, H, W) uint8 images and (N,) labels."""
    from genorder.data import DatasetConfig, ImageDataset

    ds = ImageDataset(DatasetConfig())
    n_classes = int(labels.max()) + 1 if len(labels) else 1
    ds._set_data(images_uint8, labels, class_names or [str(k) for k in range(n_classes)])
    return ds
