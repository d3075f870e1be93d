"""The tokens of a training set under a frozen tokenizer, kept by dataset index for one run.

The trainer encodes every batch with the tokenizer (no gradient, weights frozen), so an image's
tokens are the same whenever it comes back: in the next epoch, or in a cool-down branch, which
replays the trunk's steps (`genorder.cooldown`). On a CPU the encoder is about a fifth of a small
model's training step (docs/RESULTS.md, "Profile of the CPU regime"); this cache encodes each image
once per run and gathers the rows of later batches from a dense table.

Exactness: the images of a batch that are not cached yet are encoded together, as a smaller batch.
The encoder's convolutions and the quantizer's nearest-code search work image by image, so their
tokens are those the full batch gives (`tests/test_trainer_token_cache.py` trains with and without
the cache and compares every loss); the cached run is as deterministic as the uncached one, resumed
or not (a resumed run starts with an empty cache and encodes again).

Across runs: `cache_for` keeps one cache per (tokenizer weights, dataset content) in the process,
so a worker that trains several runs with one tokenizer encodes the training set once.

Memory: (N, L) int32 for N images of L tokens (Fashion-MNIST at 8x8 tokens over 6 scales: 31 MB);
a table over `max_bytes` is not kept (`enabled` turns False and the trainer encodes every batch).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

DEFAULT_MAX_BYTES = 1 << 30


class TokenCache:
    """Tokens (a list of maps, each (B, ...)) and labels (B,) by dataset index, on the CPU."""

    def __init__(self, n: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.n = n
        self.max_bytes = max_bytes
        self.enabled = n > 0 and max_bytes > 0
        self.table_NL: torch.Tensor | None = None  # int32, allocated at the first `put`
        self.labels_N = torch.zeros(n, dtype=torch.long)
        self.have_N = torch.zeros(n, dtype=torch.bool)
        self.shapes: list[tuple[int, ...]] = []  # each map's shape without its batch axis
        self.sizes: list[int] = []
        self.dtype: torch.dtype | None = None

    def missing(self, idx_B: torch.Tensor) -> torch.Tensor:
        """The distinct indices of `idx_B` not cached yet, ascending."""
        idx_B = idx_B.cpu()
        return torch.unique(idx_B[~self.have_N[idx_B]])

    def put(self, idx_M: torch.Tensor, tokens: list[torch.Tensor], labels_M: torch.Tensor) -> None:
        """Keep the tokens of the M distinct images `idx_M` (the tokenizer's maps, each (M, ...))."""
        if not self.enabled:
            return
        if self.table_NL is None:
            self.shapes = [tuple(t.shape[1:]) for t in tokens]
            self.sizes = [math.prod(s) for s in self.shapes]
            self.dtype = tokens[0].dtype
            if self.n * sum(self.sizes) * 4 > self.max_bytes or any(t.is_floating_point() for t in tokens):
                self.enabled = False
                return
            self.table_NL = torch.zeros(self.n, sum(self.sizes), dtype=torch.int32)
        idx_M = idx_M.cpu()
        rows_ML = torch.cat([t.reshape(t.shape[0], -1) for t in tokens], dim=1)
        self.table_NL[idx_M] = rows_ML.cpu().to(torch.int32)
        self.labels_N[idx_M] = labels_M.cpu().long()
        self.have_N[idx_M] = True

    def get(self, idx_B: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(tokens, labels) of the batch `idx_B` (B,), every index cached."""
        idx_B = idx_B.cpu()
        rows_BL = self.table_NL[idx_B].to(self.dtype)
        maps = torch.split(rows_BL, self.sizes, dim=1)
        return [m.reshape(len(idx_B), *s).contiguous() for m, s in zip(maps, self.shapes)], self.labels_N[idx_B]


# -- one cache per (tokenizer, dataset) in a process: the runs a worker trains one after another ------

SHARED_ENTRIES = 2  # (tokenizer, dataset) pairs kept per process: compare's two tokenizers
_shared: OrderedDict[tuple[str, str, str], TokenCache] = OrderedDict()


def cache_for(tokenizer, dataset, max_bytes: int = DEFAULT_MAX_BYTES) -> TokenCache:
    """The token cache of `tokenizer` on `dataset`. For an in-memory `ImageDataset` (its items are
    its uint8 images as floats, and its labels) the cache is kept in this process under the content
    hashes of the tokenizer's weights and of the dataset, so the next run of this worker process with
    the same tokenizer and images (another seed or order of `genorder compare`) starts with every
    token its predecessors encoded: the same tokens, since the weights are the same. Any other
    dataset gets a cache of its own run."""
    from genorder.data import ImageDataset
    from genorder.hashing import dataset_fingerprint, tensors_fingerprint

    if not isinstance(dataset, ImageDataset) or type(dataset).__getitem__ is not ImageDataset.__getitem__:
        return TokenCache(len(dataset), max_bytes)
    key = (type(tokenizer).__qualname__, tensors_fingerprint(tokenizer.state_dict()), dataset_fingerprint(dataset))
    cache = _shared.get(key)
    if cache is None or cache.n != len(dataset) or cache.max_bytes != max_bytes:
        cache = _shared[key] = TokenCache(len(dataset), max_bytes)
    _shared.move_to_end(key)
    while len(_shared) > SHARED_ENTRIES:
        _shared.popitem(last=False)
    return cache
