"""The memory model (genorder.memory) against the measured CPU peak of a training step, at the sizes
tests/test_memory.py checks: prints predicted / measured for the total and the activations.

    python scripts/memory_check.py
"""

from __future__ import annotations

import torch

from genorder.memory import estimate, measured_peak_cpu, shape_of
from genorder.model import BackboneConfig, build_model
from genorder.registry import registry

torch.set_num_threads(1)
tok = registry("tokenizers").create("msvq-tiny", {"channels": 3}).eval()
order = registry("orders").create("next-scale", {})
for depth, batch, qk_norm in ((1, 8, True), (2, 32, True), (3, 16, False), (2, 2, True), (4, 8, True)):
    torch.manual_seed(0)
    model = build_model(order, tok, BackboneConfig(depth=depth, drop_path=0, qk_norm=qk_norm), 4)
    s = tok.image_size
    m = measured_peak_cpu(model, order, tok, torch.zeros(batch, 3, s, s), torch.zeros(batch, dtype=torch.long))
    e = estimate(shape_of(model, m["seq_len"]), batch, "none", amp=False)
    print(f"d{depth} batch {batch} qk_norm={qk_norm}: total {e.total / 2**20:.2f} / {m['total'] / 2**20:.2f} MiB "
          f"= {e.total / m['total']:.3f}; activations {e.activations / 2**20:.2f} / {m['activations'] / 2**20:.2f} MiB "
          f"= {e.activations / m['activations']:.3f}")
