"""Annealed branches: the weights of a shorter run, cut from a longer one (warmup-stable-decay).

Under the `wsd` schedule (`TrainConfig.schedule`) the learning rate stays at its peak until the
last `cooldown` of a run, then decays linearly to `final_lr`·peak. A run of budget `end` (a fraction
of the trunk's budget) is therefore the trunk up to `fork_at(end)` = (1 - cooldown)·end, followed by
its own cool-down. `anneal_branch` runs that cool-down from the trunk's current state and returns
the weights; the trunk's model, optimizer and budget are restored, so the trunk goes on exactly as
if no branch had been taken (every step's batch and noise are a function of (seed, step)).

Why compare scores branches: a point saved half-way through a decaying run carries a learning rate
that is still high, so the curve of such points measures the schedule as much as the training. A
branch point is the model a run of that length ends with; the curve of branch points is quality
against compute, and its last 20% says what the last 20% of the compute bought (the plateau test,
`genorder.heldout.plateau`). The one difference from a separate run of that length: the warmup is
the trunk's (`warmup`·trunk budget steps), not `warmup`·end.

    >>> w, spent = anneal_branch(trainer, end=0.6)  # at trainer.tracker.fraction() == fork_at(cfg, 0.6)
    >>> w                                          # {name: tensor}: what a run of 0.6 the length ends with

Cost: a branch for every point k/P, k < P, adds cooldown·(P-1)/2 of the trunk's compute.
"""

from __future__ import annotations

import copy

import torch

from genorder.budget import BudgetTracker, Spent


def fork_at(cfg, end: float) -> float:
    """Fraction of the trunk's budget at which the branch of a run ending at `end` leaves it."""
    return end * (1 - cfg.cooldown)


def anneal_branch(trainer, end: float) -> tuple[dict[str, torch.Tensor], dict]:
    """Cool down from the trainer's current state to `end` (fraction of its budget, above the
    current one) under the wsd schedule of a run of that length; return the weights (on CPU) and
    what the run of that length spent (`Spent.as_dict()`: steps, images, tokens, flops, seconds of
    trunk and branch), and leave the trainer as it was. Raises `TrainingDiverged` when the branch
    ends non-finite."""
    from genorder.trainer import TrainingDiverged

    cfg = trainer.cfg
    if cfg.schedule != "wsd":
        raise ValueError("anneal_branch needs the wsd schedule (train.schedule=wsd)")
    model, opt = trainer.model, trainer.optimizer
    keep_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    keep_opt = copy.deepcopy(opt.state_dict())
    keep_tracker = trainer.tracker
    trainer.tracker = BudgetTracker(cfg.budget, Spent(**keep_tracker.spent.as_dict()))
    try:
        while trainer.tracker.fraction() + 1e-9 < end:
            trainer.train_step(trainer.tracker.spent.steps, trainer.tracker.fraction() / end)
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        spent = trainer.tracker.spent.as_dict()
    finally:
        model.load_state_dict(keep_model)
        opt.load_state_dict(keep_opt)
        trainer.tracker = keep_tracker
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise TrainingDiverged(f"the cool-down branch to {end:.3g} of the budget ended non-finite ({bad[0]})")
    return weights, spent
