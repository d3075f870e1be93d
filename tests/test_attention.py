"""One attention pattern, three kernels: SDPA with a boolean mask, FlexAttention, and the KV cache."""

import warnings

import pytest
import torch

from genorder.layout import TokenLayout, block_causal_groups, causal_groups, mask_from_groups
from genorder.model import BackboneConfig, GenModel
from genorder.order import Stem


class IdStem(Stem):
    """Feeds continuous vectors straight through: isolates the backbone."""

    def forward(self, inputs, cond, start=0):
        return inputs + cond[:, None]


def model(groups, backend, **kw):
    torch.manual_seed(0)
    cfg = BackboneConfig(depth=2, width=32, heads=2, init_adaln_gamma=1.0, attn_backend=backend, **kw)
    return GenModel(cfg, IdStem(), vocab=11, num_classes=3, groups=groups)


@pytest.mark.parametrize("groups", [block_causal_groups(TokenLayout((1, 2, 3))), causal_groups(14)], ids=["block", "causal"])
@pytest.mark.parametrize("qk_norm", [True, False])
def test_flex_equals_sdpa_forward(groups, qk_norm):
    """Forward on the CPU (FlexAttention has no CPU backward; the GPU test below covers it)."""
    x = torch.randn(2, groups.numel(), 32)
    labels = torch.tensor([0, 3])
    outs = []
    for backend in ("sdpa", "flex"):
        m = model(groups, backend, qk_norm=qk_norm).eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            outs.append(m(x, labels))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    expected = "causal" if torch.equal(groups, causal_groups(14)) else "flex"
    assert model(groups, "flex")._plan(0, groups.numel(), False, torch.device("cpu")).mode == expected


@pytest.mark.gpu
def test_flex_equals_sdpa_backward_on_gpu():
    groups = block_causal_groups(TokenLayout((1, 2, 3, 4, 5, 6, 8, 10, 13, 16)))
    x = torch.randn(4, groups.numel(), 32, device="cuda")
    labels = torch.tensor([0, 3, 1, 2], device="cuda")
    outs, grads = [], []
    for backend in ("sdpa", "flex"):
        m = model(groups, backend).cuda().eval()
        xi = x.clone().requires_grad_(True)
        y = m(xi, labels)
        y.square().mean().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_mask_semantics():
    g = torch.tensor([0, 1, 1, 2])
    m = mask_from_groups(g, g)
    assert m.tolist() == [
        [True, False, False, False],
        [True, True, True, False],
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_cache_chunks_of_whole_groups_equal_full():
    """Feeding positions through the KV cache in chunks of whole groups (here two scales at once,
    which needs a mask inside the chunk) reproduces the masked forward."""
    g = block_causal_groups(TokenLayout((1, 2, 3)))
    m = model(g, "sdpa").eval()
    x = torch.randn(2, 14, 32)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        full = m(x, labels)
        cache = m.new_cache(2)
        pieces = [(0, 5), (5, 14)]  # scales 0+1 together, then scale 2
        outs = [m(x[:, a:b], labels, start=a, cache=cache) for a, b in pieces]
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
