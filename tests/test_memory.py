"""The memory model (`genorder.memory`) against the measured peak of a training step on the CPU at
small sizes: within 15% in total and in activations (fp32, no autocast, one process), over depths,
batches and both attention variants; and what `genorder memory` prints."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from genorder.memory import GIB, estimate, measured_peak_cpu, shape_of, var_shape
from genorder.model import BackboneConfig, build_model
from genorder.registry import registry


@pytest.mark.parametrize(("depth", "batch", "qk_norm"), [(1, 8, True), (2, 32, True), (3, 16, False), (2, 2, True)])
def test_prediction_within_15_percent_of_the_measured_peak(depth, batch, qk_norm):
    torch.set_num_threads(1)
    tok = registry("tokenizers").create("msvq-tiny", {"channels": 3}).eval()
    order = registry("orders").create("next-scale", {})
    torch.manual_seed(0)
    model = build_model(order, tok, BackboneConfig(depth=depth, drop_path=0, qk_norm=qk_norm), 4)
    size = tok.image_size
    meas = measured_peak_cpu(model, order, tok, torch.zeros(batch, tok.channels, size, size), torch.zeros(batch, dtype=torch.long))
    pred = estimate(shape_of(model, meas["seq_len"]), batch, "none", amp=False)
    assert pred.params == meas["params"]  # the same parameter count, so the static bytes are exact
    assert abs(pred.activations / meas["activations"] - 1) < 0.15, (pred, meas)
    assert abs(pred.total / meas["total"] - 1) < 0.15, (pred, meas)


def test_fsdp_shards_and_checkpointing_shrink_the_estimate():
    s = var_shape(30)
    assert 1.9e9 < s.n_params < 2.2e9  # VAR-d30: 2.0 B parameters
    ddp = estimate(s, 16, "ddp", 8)
    fsdp = estimate(s, 16, "fsdp", 8)
    ac = estimate(s, 16, "fsdp", 8, checkpointing=True)
    assert fsdp.optimizer == pytest.approx(ddp.optimizer / 8) and fsdp.params == pytest.approx(ddp.params / 8)
    assert ac.activations < fsdp.activations / 5
    assert fsdp.max_batch(80 * GIB) > ddp.max_batch(80 * GIB)
    assert estimate(s, fsdp.max_batch(80 * GIB), "fsdp", 8).total <= 0.9 * 80 * GIB


def test_memory_command_prints_every_depth():
    from genorder_cli.main import app

    r = CliRunner().invoke(app, ["memory", "--depth", "16", "--depth", "30", "--batch-size", "64", "--gpus", "8"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "d16" in text and "d30" in text and "fsdp" in text and "ddp" in text and "pending a GPU run" in text
    bad = CliRunner().invoke(app, ["memory", "--depth", "16", "--gpus", "0"])
    assert bad.exit_code == 2 and "error:" in bad.output
