"""Held-out token loss: the training objective measured on a fixed subset of the test split.

Every order is scored the same way: the first `n` test images are tokenized, the order builds its
teacher-forcing batch (MaskGIT's random masks come from a fixed seed, so the score is a function of
the weights alone), the model sees the true labels (no label dropout) and the loss is the mean
cross-entropy per target token. Lower is better; the value is comparable across checkpoints of one
order, and the relative change between checkpoints says whether training has flattened
(`plateau`).

    >>> loss = heldout_loss(order, tokenizer, model, test_images, test_labels)   # float
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genorder.order import IGNORE

SEED = 12345  # the masks / noise of orders that draw them at training time


@torch.no_grad()
def heldout_loss(order, tokenizer, model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100,
                 seed: int = SEED) -> float:
    """Mean cross-entropy per target token of `model` on images (N, C, H, W) in [-1, 1] (uint8 is
    converted) with their labels (N,). Deterministic: the same weights give the same number."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    g = torch.Generator().manual_seed(seed)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        if x.dtype == torch.uint8:
            x = x.float().div(127.5).sub(1.0)
        y = labels[start : start + batch_size].to(device)
        tokens = tokenizer.encode(x.to(device))
        batch = order.training_batch(tokens, tokenizer, g)
        logits = model(batch.inputs, y).float()  # (B, S, V)
        targets = batch.targets  # (B, S)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum")  # fmt: skip
        total += float(loss_sum)
        count += int((targets != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


def plateau(points: list[tuple[float, float]], tail: float = 0.2) -> dict:
    """Whether a held-out loss curve has flattened: the relative improvement over the last `tail`
    of training, from the point at or before (1 - tail) of the x range to the last point.

    points: [(x, loss)] sorted by x (steps, images or FLOPs). Returns {"from", "to",
    "improvement" (fraction, positive = the loss went down), "tail"}."""
    if len(points) < 2:
        return {"from": None, "to": None, "improvement": None, "tail": tail}
    pts = sorted(points)
    x_end = pts[-1][0]
    cut = x_end * (1 - tail)
    before = [p for p in pts if p[0] <= cut + 1e-9 * max(1.0, abs(cut))] or pts[:1]
    a, b = before[-1], pts[-1]
    return {"from": a[0], "to": b[0], "improvement": (a[1] - b[1]) / a[1] if a[1] else None, "tail": tail}
