"""The CPU micro-benchmarks behind docs/RESULTS.md §0.5, one torch thread, median of 15 calls:

    python scripts/profile_micro.py attention    # SDPA flash against math kernel at the regime's shapes
    python scripts/profile_micro.py adamw        # AdamW for-loop / foreach / fused on the d2 next-scale model
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, n: int = 15, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[n // 2]


def attention() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from genorder.layout import TokenLayout, block_causal_groups, mask_from_groups

    g = block_causal_groups(TokenLayout((1, 2, 3, 4, 6, 8)))
    mask = mask_from_groups(g, g)
    for L, mode in ((130, "mask"), (64, "causal"), (65, "none")):
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
            q, k, v = (torch.randn(64, 2, L, 32, requires_grad=True) for _ in range(3))

            def fwd(bwd: bool = False):
                with sdpa_kernel([backend]):
                    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask if mode == "mask" else None,
                                                       is_causal=mode == "causal", scale=1.0)  # fmt: skip
                if bwd:
                    o.sum().backward()

            print(f"{L} tokens {mode} {backend.name}: forward {median_ms(fwd):.2f} ms, "
                  f"forward+backward {median_ms(lambda: fwd(True)):.2f} ms")  # fmt: skip


def adamw() -> None:
    from genorder.model import BackboneConfig, build_model
    from genorder.registry import registry

    order = registry("orders").create("next-scale", {})
    tok = registry("tokenizers").create("msvq-fmnist-cpu", {})
    for mode, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        torch.manual_seed(0)
        model = build_model(order, tok, BackboneConfig(depth=2, width=64), 10)
        opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-2, betas=(0.9, 0.95), **kw)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        print(f"AdamW {mode}: {median_ms(opt.step, n=50, warmup=5):.2f} ms a step")


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"attention": attention, "adamw": adamw}[sys.argv[1] if len(sys.argv) > 1 else "adamw"]()
