"""The trainer's AdamW on a CPU: fused (one kernel over every tensor), deterministic, and AdamW."""

from __future__ import annotations

import torch
from test_faults import _tiny_trainer


def test_fused_adamw_on_cpu_same_seed_twice_gives_the_same_losses_and_weights(tmp_path):
    a = _tiny_trainer(tmp_path / "a", 8, checkpoint_every=None)
    b = _tiny_trainer(tmp_path / "b", 8, checkpoint_every=None)
    assert a.device.type == "cpu" and all(g["fused"] for g in a.optimizer.param_groups)
    a.fit()
    b.fit()
    assert [m["loss"] for m in a.history] == [m["loss"] for m in b.history]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len({m["loss"] for m in a.history}) > 1  # it trained


def test_fused_adamw_takes_the_steps_of_the_reference_adamw(tmp_path):
    """The same gradients through the fused and the for-loop AdamW (the trainer's groups, betas and
    weight decay): the parameters agree to float32 round-off after 20 steps."""
    a = _tiny_trainer(tmp_path, 20)
    params = [p for g in a.optimizer.param_groups for p in g["params"]]
    ref_params = [p.detach().clone().requires_grad_(True) for p in params]
    start = [p.detach().clone() for p in params]
    groups = [{"params": ref_params[i : i + len(g["params"])], "weight_decay": g["weight_decay"]}
              for i, g in zip([0, len(a.optimizer.param_groups[0]["params"])], a.optimizer.param_groups)]  # fmt: skip
    ref = torch.optim.AdamW(groups, lr=a.cfg.peak_lr(), betas=a.cfg.betas, foreach=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        for p, q in zip(params, ref_params):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        a.optimizer.step()
        ref.step()
    for p, q in zip(params, ref_params):
        assert torch.allclose(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(p.detach(), s) for p, s in zip(params, start))  # every tensor moved
