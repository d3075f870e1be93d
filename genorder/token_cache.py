"""A dataset's tokens, encoded once per (tokenizer, dataset content) and kept beside the tokenizer.

The trainer encodes every batch with the frozen tokenizer. When a dataset has no random
augmentation (every `ImageDataset` here), the tokens of image i are the same at every step, in
every run: on a CPU, where the tokenizer's encoder costs a third of a small model's step, encoding
the split once and sharing it between runs (every seed and order of `compare`, every row of
`ablate`) is the cheaper path. The file is keyed by the tokenizer's content hash and the dataset's
content hash (`genorder.hashing`), so a changed tokenizer or dataset is a new file, never a stale one.

    >>> tokens = cached_tokens(tokenizer, dataset, cache_dir)   # [(N, p_k*p_k) int16/int32 per scale]
    >>> Trainer(..., tokens=tokens)                              # batches index them instead of encoding

Encoding in batches of `batch_size` instead of the training batch can change a float round-off
inside the encoder, and with it a rare nearest-code choice: a run with the cache is deterministic,
but not bit-identical to the same run without it (the run records which it used).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from genorder.checkpoint import load_checkpoint, save_checkpoint
from genorder.hashing import config_fingerprint, dataset_fingerprint, short, tensors_fingerprint


def cache_key(tokenizer, dataset) -> str:
    """Tokenizer (weights, type, scales, codebook) and dataset content, hashed."""
    return short(config_fingerprint({"weights": tensors_fingerprint(tokenizer.state_dict()), "type": type(tokenizer).__name__,
                                     "scales": list(tokenizer.scales), "codebook": tokenizer.codebook_size,
                                     "dataset": dataset_fingerprint(dataset)}))  # fmt: skip


@torch.no_grad()
def encode_dataset(tokenizer, dataset, batch_size: int = 500,
                   progress: Callable[[float], None] | None = None) -> list[torch.Tensor]:  # fmt: skip
    """Every image of `dataset` (an `ImageDataset`) through `tokenizer.encode`, in order:
    [(N, p_k*p_k) per scale], int16 when the codebook fits, else int32."""
    device = next((p.device for p in tokenizer.parameters()), torch.device("cpu"))
    was_training = tokenizer.training
    tokenizer.eval()
    dtype = torch.int16 if tokenizer.codebook_size <= 32767 else torch.int32
    parts: list[list[torch.Tensor]] = []
    n = len(dataset)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        images, _ = dataset.get_batch(idx)  # (B, C, H, W) in [-1, 1]
        parts.append([t.to("cpu", dtype) for t in tokenizer.encode(images.to(device))])
        if progress:
            progress(min(n, start + batch_size) / n)
    tokenizer.train(was_training)
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]


def cached_tokens(tokenizer, dataset, cache_dir: str | Path) -> list[torch.Tensor]:
    """The tokens of `dataset` under `tokenizer`, from `cache_dir/tokens-KEY.safetensors` or encoded
    now and written there (atomically)."""
    stem = Path(cache_dir) / f"tokens-{cache_key(tokenizer, dataset)}"
    if stem.with_suffix(".safetensors").is_file():
        try:
            state, _ = load_checkpoint(stem)
            tokens = [state[f"scale{k}"] for k in range(len(state))]
            if all(len(t) == len(dataset) for t in tokens) and len(tokens) == len(tokenizer.scales):
                return tokens
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # unreadable or foreign: encode again
    tokens = encode_dataset(tokenizer, dataset)
    save_checkpoint(stem, {f"scale{k}": t.contiguous() for k, t in enumerate(tokens)},
                    {"component": "token-cache", "images": len(dataset), "scales": list(tokenizer.scales)})  # fmt: skip
    return tokens
