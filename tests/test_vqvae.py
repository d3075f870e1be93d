"""The multi-scale VQVAE tokenizer (VAR_SPEC §1): shapes, phi rule, parameter count, codec
consistency, teacher-forcing inputs, VQ loss, checkpoints, and a short fit on `shapes`."""

from __future__ import annotations

import pytest
import torch
from genorder.testing import one_thread
import torch.nn.functional as F
from einops import rearrange

from genorder.checkpoint import save_checkpoint
from genorder.errors import UserError
from genorder.registry import registry
from genorder_plugins.vqvae.quantizer import MultiScaleQuantizer, num_phi_for, phi_indices
from genorder_plugins.vqvae.tokenizer import MultiScaleVQVAE, load_tokenizer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is several times faster than two on a busy 2-core box."""
    with one_thread():
        yield


def make(name: str, **opts) -> MultiScaleVQVAE:
    torch.manual_seed(0)
    return registry("tokenizers").create(name, opts)


def images(b: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: upsampled low-resolution noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, c, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


# -- shapes, presets, config -----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_encode_decode_shapes(channels):
    tok = make("msvq-tiny", channels=channels).eval()
    x = images(2, channels, 16)
    tokens = tok.encode(x)
    assert tok.scales == (1, 2, 4)
    assert [t.shape for t in tokens] == [(2, 1), (2, 4), (2, 16)]
    assert all(t.dtype == torch.int64 and 0 <= int(t.min()) and int(t.max()) < tok.codebook_size for t in tokens)
    for k in range(1, 4):  # decoding from a prefix of the scales works
        out = tok.decode(tokens[:k])
        assert out.shape == (2, channels, 16, 16) and out.abs().max() <= 1
    rec, vq, usages = tok(x)
    assert rec.shape == x.shape and vq.ndim == 0 and len(usages) == 3


def test_single_scale_preset():
    tok = make("vq-tiny").eval()
    tokens = tok.encode(images(3, 1, 16))
    assert [t.shape for t in tokens] == [(3, 16)]
    assert tok.latent_inputs(tokens).shape == (3, 0, tok.latent_dim)
    assert tok.decode(tokens).shape == (3, 1, 16, 16)


def test_presets_registered_with_their_defaults():
    names = set(registry("tokenizers").names())
    assert {"msvq", "var-256", "msvq-fmnist", "vq-fmnist", "msvq-tiny", "vq-tiny"} <= names
    fm = registry("tokenizers").config_class("msvq-fmnist")()
    assert (fm.channels, fm.image_size, fm.scales[-1], len(fm.scales)) == (1, 32, 16, 10)
    assert registry("tokenizers").config_class("vq-fmnist")().scales == (16,)
    # a preset's description survives the default change
    assert registry("tokenizers").config_class("msvq-fmnist").model_fields["vocab_size"].description


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="last scale"):
        registry("tokenizers").create("msvq-tiny", {"scales": [1, 2]})
    with pytest.raises(UserError, match="increasing"):
        registry("tokenizers").create("msvq-tiny", {"scales": [2, 1, 4]})
    with pytest.raises(UserError):
        registry("tokenizers").create("msvq-tiny", {"no_such_option": 1})


def test_var256_parameter_count_is_exact():
    with torch.device("meta"):
        tok = registry("tokenizers").create("var-256")
    assert sum(p.numel() for p in tok.parameters()) == 108_948_355
    assert sum(p.numel() for p in tok.quantizer.parameters()) == 4096 * 32 + 4 * (32 * 32 * 9 + 32)
    assert tok.scales == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


# -- phi -------------------------------------------------------------------------------------------


def test_phi_tick_rule():
    assert phi_indices(10, 4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert phi_indices(10, num_phi_for(1, 10)) == [0] * 10  # share mode 1: one phi for all
    assert phi_indices(10, num_phi_for(0, 10)) == list(range(10))  # share mode 0: one per scale
    assert phi_indices(1, 4) == [0]
    q4 = MultiScaleQuantizer(16, 4, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), phi_share=4)
    assert len(q4.phis) == 4 and q4.phi_index == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert len(MultiScaleQuantizer(16, 4, (1, 2, 4), phi_share=0).phis) == 3
    assert len(MultiScaleQuantizer(16, 4, (1, 2, 4), phi_share=1).phis) == 1


def test_phi_mixes_residually():
    q = MultiScaleQuantizer(8, 3, (1, 2), phi_share=1, quant_resi=0.5)
    h = torch.randn(2, 3, 2, 2)
    conv = q.phis[0]
    expected = 0.5 * h + 0.5 * F.conv2d(h, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(q.phi(0, h), expected)


# -- codec consistency -----------------------------------------------------------------------------


def test_encode_decode_matches_forward_in_eval():
    tok = make("msvq-tiny", channels=3).eval()
    x = images(4, 3, 16, seed=1)
    rec, _, _ = tok(x)
    tokens = tok.encode(x)
    _, idx, _, _ = tok.quantizer(tok.latent(x))
    assert all(torch.equal(a, b) for a, b in zip(tokens, idx))
    torch.testing.assert_close(tok.decode(tokens), rec.clamp(-1, 1), atol=1e-5, rtol=1e-5)


def reference_inputs(q: MultiScaleQuantizer, tokens: list[torch.Tensor]) -> torch.Tensor:
    """VAR_SPEC §1.5 written out directly: area_down(f_hat after scales < k, p_k) for k >= 1."""
    H = q.scales[-1]
    f_hat = torch.zeros(tokens[0].shape[0], q.dim, H, H)
    out = []
    for k in range(len(q.scales) - 1):
        p = q.scales[k]
        e = rearrange(q.embedding.weight[tokens[k]], "b (h w) c -> b c h w", h=p, w=p)
        up = F.interpolate(e, size=(H, H), mode="bicubic", align_corners=False)
        f_hat = f_hat + q.phis[q.phi_index[k]](up)
        nxt = F.interpolate(f_hat, size=(q.scales[k + 1],) * 2, mode="area")
        out.append(rearrange(nxt, "b c h w -> b (h w) c"))
    return torch.cat(out, dim=1)


def test_latent_inputs_match_reference_and_latent_step():
    tok = make("msvq-tiny", phi_share=0).eval()
    q = tok.quantizer
    tokens = tok.encode(images(3, 1, 16, seed=2))
    inputs = tok.latent_inputs(tokens)
    assert inputs.shape == (3, 4 + 16, tok.latent_dim)  # L - p_1^2
    with torch.no_grad():
        torch.testing.assert_close(inputs, reference_inputs(q, tokens))
    f_hat, steps = None, []
    for k, t in enumerate(tokens):
        f_hat, nxt = tok.latent_step(k, f_hat, tok.code_vectors(t))
        if k < len(tokens) - 1:
            steps.append(nxt)
        else:
            assert nxt is None
    torch.testing.assert_close(torch.cat(steps, dim=1), inputs)
    with torch.no_grad():
        torch.testing.assert_close(f_hat, q.embed_to_fhat(tokens))
    torch.testing.assert_close(tok.latent_decode(f_hat), tok.decode(tokens))
    assert tok.codebook.shape == (tok.codebook_size, tok.latent_dim)


# -- VQ loss, straight-through ---------------------------------------------------------------------


def test_vq_loss_hand_case():
    """C = 1, latent 2x2, scales (1, 2), no phi, codes {0, 1, 0.25}, f = [[1, 1], [1, 1.5]].

    Scale 0: mean 1.125 -> code 1, f_hat_1 = 1 everywhere, residual (0, 0, 0, 0.5).
    Scale 1: code 0 for the zeros, code 2 (0.25) for 0.5, f_hat_2 = [[1, 1], [1, 1.25]].
    L = (1 + beta) / 2 * (mse_1 + mse_2) = 1.25 / 2 * (0.25 / 4 + 0.0625 / 4)."""
    q = MultiScaleQuantizer(3, 1, (1, 2), phi_share=1, quant_resi=0.0, beta=0.25)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[0.0], [1.0], [0.25]]))
    f = torch.tensor([[[[1.0, 1.0], [1.0, 1.5]]]], requires_grad=True)
    f_st, idx, loss, _ = q(f)
    assert idx[0].tolist() == [[1]] and idx[1].tolist() == [[0, 0, 0, 2]]
    assert loss.item() == pytest.approx(1.25 / 2 * (0.25 / 4 + 0.0625 / 4))
    torch.testing.assert_close(f_st.detach(), torch.tensor([[[[1.0, 1.0], [1.0, 1.25]]]]))
    # the commitment term is the only gradient to f through the loss: beta * 2 (f - f_hat_k) / N, averaged
    (g_f,) = torch.autograd.grad(loss, f, retain_graph=True)
    expected = 0.25 * 2 / 4 * ((f - 1.0) + (f - torch.tensor([[[[1.0, 1.0], [1.0, 1.25]]]]))) / 2
    torch.testing.assert_close(g_f, expected.detach())
    # straight-through: d(f_st)/d(f) is the identity
    (g_st,) = torch.autograd.grad(f_st.sum(), f)
    torch.testing.assert_close(g_st, torch.ones_like(f))


def test_dead_codes_are_restarted_onto_residuals():
    q = MultiScaleQuantizer(32, 4, (1, 2, 4), code_init=-1.0).train()
    f = torch.randn(8, 4, 4, 4) * 3
    q(f)
    used = q.hits_V > 0
    moved = q.restart_dead_codes()
    assert moved == int((~used).sum()) > 0
    pool = q._pool_NC
    d = torch.cdist(q.embedding.weight[~used].detach(), pool).min(dim=1).values
    assert float(d.max()) < 0.1 * float(pool.norm(dim=1).mean())  # each moved code sits on a residual
    assert float(q.hits_V.sum()) == 0


# -- a short fit -----------------------------------------------------------------------------------


def test_error_falls_as_scales_are_added():
    from genorder.data import load_dataset
    from genorder.tokenizer_training import psnr_per_image, train_tokenizer
    from genorder_plugins.vqvae.train import VQVAETrainConfig as TokenizerTrainConfig

    torch.manual_seed(0)
    tok = registry("tokenizers").create("msvq-tiny", {"channels": 3, "ch": 8, "scales": (1, 2, 4)})
    ds = load_dataset("shapes", image_size=16, limit=256)
    cfg = TokenizerTrainConfig(batch_size=16, lr=2e-3, budget={"steps": 40}, restart_every=10,
                               eval_images=32, eval_prefix_images=16, grid_images=2)  # fmt: skip
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        m = train_tokenizer(tok, "msvq-tiny", ds, cfg, Path(d))
    x = ds.get_batch(torch.arange(64))[0]
    tokens = tok.encode(x)
    with torch.no_grad():
        f = tok.latent(x)
        latent_err = [float((tok.quantizer.embed_to_fhat(tokens[:k]) - f).square().mean()) for k in (1, 2, 3)]
        psnr = [float(psnr_per_image(tok.decode(tokens[:k]), x).mean()) for k in (1, 2, 3)]
    assert latent_err[0] > latent_err[1] > latent_err[2]
    assert psnr[0] < psnr[1] < psnr[2]
    assert m["psnr_per_k"][0] < m["psnr_per_k"][-1]


def test_gan_losses_run(tmp_path):
    from genorder.data import load_dataset
    from genorder.tokenizer_training import train_tokenizer
    from genorder_plugins.vqvae.train import VQVAETrainConfig as TokenizerTrainConfig

    torch.manual_seed(0)
    tok = registry("tokenizers").create("msvq-tiny", {"channels": 3, "ch": 8})
    ds = load_dataset("shapes", image_size=16, limit=64)
    cfg = TokenizerTrainConfig(batch_size=8, budget={"steps": 3}, gan=True, gan_start=1, log_every=1,
                               eval_images=8, eval_prefix_images=2, grid_images=1)  # fmt: skip
    logs: list[dict] = []
    train_tokenizer(tok, "msvq-tiny", ds, cfg, tmp_path, progress=lambda d, t, m: logs.append(m))
    assert "d_loss" not in logs[0] and all("d_loss" in m and "gan_weight" in m for m in logs[1:])
    assert all(0.015 * cfg.gan_weight <= m["gan_weight"] for m in logs[1:])


# -- checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_tokens(tmp_path):
    tok = make("msvq-tiny", channels=3, vocab_size=32).eval()
    x = images(4, 3, 16, seed=3)
    save_checkpoint(tmp_path / "tokenizer", tok.state_dict(), tok.checkpoint_meta())
    back = load_tokenizer(tmp_path / "tokenizer.safetensors")
    assert type(back).__name__ == type(tok).__name__ and back.config == tok.config
    assert all(torch.equal(a, b) for a, b in zip(tok.encode(x), back.encode(x)))
    torch.testing.assert_close(tok.decode(tok.encode(x)), back.decode(back.encode(x)))
    with pytest.raises(UserError):
        load_tokenizer(tmp_path / "missing")
