"""The next-scale (VAR) order: mask, cache equivalence, parameter counts, training, resume."""

from types import SimpleNamespace

import pytest
import torch

from genorder.attention import plan_attention
from genorder.budget import Budget
from genorder.data import load_dataset
from genorder.flops import forward_flops
from genorder.layout import TokenLayout, block_causal_groups, mask_from_groups
from genorder.model import BackboneConfig, build_model, count_params
from genorder.registry import registry
from genorder.sampler import StandardSampler
from genorder.trainer import Trainer, TrainConfig

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return registry("tokenizers").create("msvq-tiny", {"scales": (1, 2, 3, 4), "channels": 1}).eval()


def order(**kw):
    return registry("orders").create("next-scale", kw)


def tiny_model(tok, **kw):
    cfg = BackboneConfig(**{"depth": 2, "width": 64, "heads": 2, "init_adaln_gamma": 1.0, **kw})
    return build_model(order(), tok, cfg, num_classes=3).eval()


def test_block_causal_mask_is_var_spec():
    layout = TokenLayout(VAR_SCALES)
    assert layout.length == 680
    assert layout.bounds[:3] == ((0, 1), (1, 5), (5, 14)) and layout.bounds[-1] == (424, 680)
    lv = layout.levels()
    mask = mask_from_groups(block_causal_groups(layout), block_causal_groups(layout))
    expected = lv[:, None] >= lv[None, :]  # bias[i, j] = 0 iff level_i >= level_j
    assert torch.equal(mask, expected)
    assert mask[0].sum() == 1  # the start token sees only itself
    assert mask[4, :5].all() and not mask[4, 5:].any()  # scale 1 (tokens 1..4) sees scales 0-1 only
    assert mask[679].all()  # the last token sees everything
    assert int(mask.sum()) == sum(n * e for n, (_, e) in zip(layout.lengths, layout.bounds))


def test_attention_plan_modes():
    g = block_causal_groups(TokenLayout((1, 2, 3)))
    cpu = torch.device("cpu")
    assert plan_attention(g, 0, 14, False, cpu, "sdpa").mode == "mask"
    assert plan_attention(g, 1, 4, True, cpu, "sdpa").mode == "none"  # one scale through the cache
    assert plan_attention(torch.arange(5), 0, 5, False, cpu, "sdpa").mode == "causal"
    assert plan_attention(torch.zeros(5, dtype=torch.long), 0, 5, False, cpu, "sdpa").mode == "none"


def test_kv_cached_steps_equal_full_masked_forward(tok):
    """Logits of the cached per-scale forwards equal one block-causal forward, at every scale."""
    model = tiny_model(tok)
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    tokens = tok.encode(images)
    batch = order().training_batch(tokens, tok)
    labels = torch.tensor([0, 2, 3])  # 3 = the null class
    with torch.no_grad():
        full = model(batch.inputs, labels)  # (B, L, V)
        cache = model.new_cache(3)
        layout = TokenLayout(tok.scales)
        first = layout.lengths[0]
        for k, (b, e) in enumerate(layout.bounds):
            x_in = batch.inputs[:, 0:0] if k == 0 else batch.inputs[:, b - first : e - first]
            step = model(x_in, labels, start=b, cache=cache)
            assert torch.allclose(step, full[:, b:e], atol=1e-5), f"scale {k}"


def test_teacher_forcing_batch(tok):
    tokens = tok.encode(torch.rand(2, 1, 16, 16) * 2 - 1)
    b = order().training_batch(tokens, tok)
    L = sum(p * p for p in tok.scales)
    assert b.targets.shape == (2, L) and torch.equal(b.targets, torch.cat(tokens, 1))
    assert b.inputs.shape == (2, L - 1, tok.latent_dim)
    assert torch.equal(b.inputs, tok.latent_inputs(tokens))


def test_generation_seeded_and_cache_free_identical(tok):
    model = tiny_model(tok)
    s = StandardSampler(StandardSampler.Config(cfg=1.5, top_k=20, top_p=0.9))
    labels = torch.tensor([0, 1, 2, 1])

    def gen(o, seed):
        return o.generate(model, tok, labels, s, torch.Generator().manual_seed(seed))

    a, b = gen(order(), 7), gen(order(), 7)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [t.shape for t in a] == [(4, p * p) for p in tok.scales]
    c = gen(order(kv_cache=False), 7)
    assert all(torch.equal(x, y) for x, y in zip(a, c))
    d = gen(order(), 8)
    assert not all(torch.equal(x, y) for x, y in zip(a, d))


def _var_tok():
    return SimpleNamespace(scales=VAR_SCALES, latent_dim=32, codebook_size=4096)


def _count(depth, **kw):
    o = order()
    with torch.device("meta"):
        return count_params(build_model(o, _var_tok(), BackboneConfig(depth=depth, **kw), 1000))


def test_parameter_counts_match_official():
    assert _count(16) == 310_283_520  # the official VAR-d16 measures exactly this
    assert _count(20) / 1e6 == pytest.approx(600.92, abs=0.01)
    assert _count(24) / 1e6 == pytest.approx(1033.4, abs=0.1)
    assert _count(30) / 1e6 == pytest.approx(2010.0, abs=0.1)
    assert _count(16, adaln=False) / 1e6 == pytest.approx(207.4, abs=0.2)  # ablation row 2


def test_parameter_formula_general():
    for d in (2, 8, 16):
        C = 64 * d
        formula = d * (18 * C * C + 14 * C + d) + 2 * C * C + (5143 + 680) * C + 4096
        assert _count(d) == formula


def test_flops_counted_match_torch_flop_counter(tok):
    """Analytic FLOPs (with a dense pattern) equal torch's FlopCounterMode on the same forward."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_model(tok)
    tokens = tok.encode(torch.rand(1, 1, 16, 16) * 2 - 1)
    batch = order().training_batch(tokens, tok)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with FlopCounterMode(display=False) as fc, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(batch.inputs, torch.tensor([0]))
    S, first_l = model.seq_len, tok.scales[0] ** 2
    stem_on_start = 2 * model.stem.word_embed.in_features * model.cfg.C * first_l  # counted on all S rows
    # the math kernel with a mask computes all S*S pairs
    assert forward_flops(model, pairs=S * S) - stem_on_start == fc.get_total_flops()
    assert forward_flops(model) < fc.get_total_flops()  # the block-causal pattern needs fewer


def _trainer(tok, out, steps, **kw):
    ds = load_dataset("shapes", "train", image_size=16, limit=64)
    torch.manual_seed(0)
    tok1 = registry("tokenizers").create("msvq-tiny", {"scales": (1, 2, 4), "channels": 3})
    model = build_model(order(), tok1, BackboneConfig(depth=2, width=64, heads=2), ds.num_classes)
    cfg = TrainConfig(batch_size=8, lr=3e-3, budget=Budget(steps=steps), log_every=5, **kw)
    return Trainer(order(), tok1, model, ds, cfg, out, {})


def test_training_lowers_loss(tmp_path, tok):
    tr = _trainer(tok, tmp_path, 40)
    tr.fit()
    first = sum(m["loss"] for m in tr.history[:5]) / 5
    last = sum(m["loss"] for m in tr.history[-5:]) / 5
    assert last < first - 0.5, (first, last)
    assert "acc_l0" in tr.history[-1] and "acc_l2" in tr.history[-1]
    assert tr.tracker.spent.images == 40 * 8 and tr.tracker.spent.flops > 0


def test_resume_continues_with_identical_losses(tmp_path, tok):
    full = _trainer(tok, tmp_path / "a", 12)
    full.fit()
    part = _trainer(tok, tmp_path / "b", 12)
    part.fit(stop_after=5)
    resumed = _trainer(tok, tmp_path / "b", 12)
    assert resumed.resume()
    resumed.fit()
    a = [m["loss"] for m in full.history]
    b = [m["loss"] for m in part.history] + [m["loss"] for m in resumed.history]
    assert len(a) == len(b) == 12
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
