"""The example third-party plugin in examples/genorder-pixel, found through its entry point."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "genorder_pixel",
    reason="the example plugin is not installed: pip install -e examples/genorder-pixel",
)

from typer.testing import CliRunner  # noqa: E402

from genorder import Tokenizer, UserError  # noqa: E402
from genorder.registry import plugin_distributions, registry  # noqa: E402


def test_registered_through_entry_point():
    assert "pixel" in registry("tokenizers").names()
    assert registry("tokenizers").entries["pixel"].plugin == "pixel"
    assert ("pixel", "genorder_pixel", "genorder-pixel") in plugin_distributions()


@pytest.mark.parametrize("channels,levels", [(1, 16), (3, 4)])
def test_round_trip_within_quantisation_step(channels, levels):
    tok = registry("tokenizers").create(
        "pixel", {"channels": channels, "levels": levels, "grid": 8, "image_size": 16}
    )
    assert isinstance(tok, Tokenizer)
    assert tok.scales == (8,) and tok.codebook_size == levels**channels
    assert tok.image_size == 16 and tok.channels == channels
    # images that are constant on each 2x2 pooling cell, so pooling loses nothing
    coarse = torch.rand(5, channels, 8, 8) * 2 - 1
    images = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (5, C, 16, 16)
    tokens = tok.encode(images)
    assert len(tokens) == 1 and tokens[0].shape == (5, 64) and tokens[0].dtype == torch.int64
    assert 0 <= tokens[0].min() and tokens[0].max() < tok.codebook_size
    recon = tok.decode(tokens)
    assert recon.shape == images.shape
    step = 2.0 / levels
    assert (recon - images).abs().max() <= step / 2 + 1e-6  # bin centres: within half a step
    assert torch.equal(tok.encode(recon)[0], tokens[0])  # decoding is a fixed point


def test_extremes_and_bad_input():
    tok = registry("tokenizers").create("pixel")
    ids = tok.encode(torch.stack([-torch.ones(1, 32, 32), torch.ones(1, 32, 32)]))[0]
    assert ids[0].unique().tolist() == [0] and ids[1].unique().tolist() == [15]
    with pytest.raises(UserError, match="expects"):
        tok.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(UserError, match="multiple of grid"):
        registry("tokenizers").create("pixel", {"image_size": 30})


def test_cli_lists_the_plugin():
    from genorder_cli.main import app

    result = CliRunner().invoke(app, ["plugins"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "pixel" in result.output and "genorder-pixel" in result.output
    assert "fashion-mnist" in result.output and "shapes" in result.output
