"""One order-agnostic trainer (VAR's recipe as the default, VAR_SPEC §3).

Per step: a batch of images -> tokenizer tokens (no grad; on a CPU each image once, `genorder.trainer_token_cache`) -> `order.training_batch` -> label dropout
to the null class (CFG) -> `model(inputs, labels)` -> uniform per-token cross-entropy over the
targets -> AdamW step with grad clipping. The learning rate follows VAR's warmup + flat + linear
decay, expressed as a function of the budget's progress so it works for any kind of budget.

Determinism: the batch, the label dropout, the order's masking and drop-path at step s are all a
function of (seed, s), so `resume` continues with exactly the losses an uninterrupted run has.

Under torchrun (`genorder.distributed`) each of W processes takes its rows of the same global batch
and DDP averages the gradients; budgets, logs and MFU count the global batch, rank 0 writes.

Faults: a checkpoint (model + optimizer + budget spent) is one atomic set in `out/checkpoints/`,
written every `checkpoint_every` steps, when `fit`'s `should_stop` says so (the CLI wires it to
SIGINT/SIGTERM) and at the end; `resume` verifies it and rewinds log.jsonl to its step. A step whose
loss or gradient norm is not finite is skipped (no optimizer update); more than `nonfinite_streak`
in a row or `nonfinite_total` in all raise `TrainingDiverged`, and a non-finite state is never saved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from genorder.budget import Budget, BudgetTracker, Spent
from genorder.checkpoint import load_checkpoint
from genorder.config import ComponentConfig
from genorder.distributed import all_sum, from_main, world
from genorder.errors import UserError
from genorder.flops import train_flops_per_sample
from genorder.fsdp import ParallelConfig, full_norm, wrap_for_training
from genorder.order import IGNORE, Order
from genorder.trainer_token_cache import TokenCache, cache_for


class TrainConfig(ComponentConfig):
    batch_size: int = Field(64, ge=1)
    base_lr: float = Field(1e-4, gt=0, description="peak lr per 256 images (VAR tblr); peak = base_lr·batch/256")
    lr: float | None = Field(None, gt=0, description="explicit peak lr (overrides base_lr scaling)")
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.05, ge=0)
    grad_clip: float = Field(2.0, gt=0)
    warmup: float = Field(0.02, ge=0, lt=1, description="fraction of the budget spent warming up")
    flat: float = Field(0.05, ge=0, lt=1, description="fraction after warmup held at the peak")
    final_lr: float = Field(0.1, ge=0, le=1, description="lr at the end as a fraction of the peak (wpe)")
    schedule: Literal["lin0", "wsd"] = Field(
        "lin0", description="lin0: VAR's warmup, flat, linear decay over the whole run; wsd: warmup, flat at "
        "the peak, linear cool-down over the last `cooldown` of the run (a run of any shorter length is a "
        "branch of the same trunk: genorder.cooldown)",
    )
    cooldown: float = Field(0.2, gt=0, le=1, description="wsd: fraction of the run spent cooling down to final_lr")
    label_drop: float = Field(0.1, ge=0, le=1, description="probability a label becomes the null class")
    budget: Budget = Field(default_factory=lambda: Budget(steps=1000))
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = Field(0, ge=-(2**40), le=2**40, description="seeds step generators as seed·1,000,003 + step (64-bit)")
    device: str = "auto"
    log_every: int = Field(20, ge=1)
    checkpoint_every: int | None = Field(
        200, ge=1, description="steps between checkpoints (None: only at the end and on SIGINT/SIGTERM)"
    )
    nonfinite_streak: int = Field(3, ge=0, description="non-finite steps in a row skipped before the run stops")
    nonfinite_total: int = Field(10, ge=0, description="non-finite steps in all skipped before the run stops")
    parallel: ParallelConfig = Field(default_factory=ParallelConfig, description="DDP or FSDP (genorder.fsdp)")

    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / 256


class TrainingDiverged(UserError):
    """The loss (or gradient) stayed non-finite beyond the skip limits; nothing was saved since the
    last good checkpoint."""


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at `progress` in [0, 1] of the run. Both schedules warm up linearly from
    0.5% of the peak over `warmup`. `lin0` (VAR): flat for `flat`, then linear decay to
    `final_lr`·peak at the end. `wsd` (warmup-stable-decay): flat at the peak until 1 - `cooldown`,
    then linear decay to `final_lr`·peak, so every run's prefix up to its cool-down is the same."""
    peak = cfg.peak_lr()
    if cfg.warmup > 0 and progress < cfg.warmup:
        return peak * (0.005 + 0.995 * progress / cfg.warmup)
    if cfg.schedule == "wsd":
        start = 1 - cfg.cooldown
        if progress <= start:
            return peak
        return peak * (1 - (1 - cfg.final_lr) * min(1.0, (progress - start) / cfg.cooldown))
    pasd = (progress - cfg.warmup) / max(1e-12, 1 - cfg.warmup)
    if pasd < cfg.flat:
        return peak
    return peak * (cfg.final_lr + (1 - cfg.final_lr) * max(0.0, 1 - pasd) / (1 - cfg.flat))


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40": 181e12, "4090": 165e12}


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def resolve_device(name: str) -> torch.device:
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:N"; a clear error when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    return dev


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g


def batch_indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch at `step`: epoch-wise seeded permutations, drop_last."""
    per_epoch = max(1, n // batch)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=step_generator(seed, -1 - epoch))
    if batch > n:
        return perm[torch.arange(batch) % n]
    return perm[i * batch : (i + 1) * batch]


def per_level_accuracy(pred: torch.Tensor, targets: torch.Tensor, levels: torch.Tensor | None) -> dict[str, float]:
    if levels is None:
        return {}
    out = {}
    for k in range(int(levels.max()) + 1):
        sel = levels == k  # levels (S,), the same for every row
        m = targets[:, sel] != IGNORE
        if m.any():
            out[f"acc_l{k}"] = float((pred[:, sel] == targets[:, sel])[m].float().mean())
    return out


TENSORBOARD = "tensorboard"  # RUN/tensorboard/: the event files, beside log.jsonl


def tensorboard_writer(out_dir: Path):
    """A `SummaryWriter` on RUN/tensorboard when tensorboard is installed, else None: every logged
    step's scalars (loss, acc, lr, throughput, ...) go there as `train/<name>` too, where researchers
    (and the official VAR code) look. It only writes; it changes no result."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out_dir / TENSORBOARD))


class Trainer:
    """Train `model` for `order` on `dataset` until the budget is spent; write checkpoints to `out_dir`."""

    def __init__(
        self,
        order: Order,
        tokenizer,
        model,
        dataset,
        cfg: TrainConfig,
        out_dir: str | Path,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.order, self.tokenizer, self.model, self.dataset, self.cfg = order, tokenizer, model, dataset, cfg
        self.out_dir = Path(out_dir)
        self.meta = dict(meta or {})
        self.world = world()
        self.device = resolve_device(cfg.device)
        if self.world.size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        if cfg.batch_size % self.world.size:
            raise UserError(f"train.batch_size {cfg.batch_size} is not divisible by the {self.world.size} processes")
        self.model.to(self.device)
        self.tokenizer.to(self.device).eval()
        for p in self.tokenizer.parameters():
            p.requires_grad_(False)
        self.sharded = cfg.parallel.mode == "fsdp"  # sharded (DCP) checkpoints: genorder.dcp
        # what the step calls: the model, its DDP wrapper, or the model sharded in place (before the optimizer)
        self.net = wrap_for_training(model, cfg.parallel, self.world, self.device)
        self.optimizer = torch.optim.AdamW(
            model.param_groups(cfg.weight_decay), lr=cfg.peak_lr(), betas=cfg.betas,
            fused=self.device.type == "cuda",
        )
        self.tracker = BudgetTracker(cfg.budget)
        self.amp = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.amp = self.amp or (self.sharded and cfg.parallel.param_dtype == "bf16")  # bf16 weights: a bf16 forward
        self.flops_per_sample = train_flops_per_sample(model)
        self.peak = device_peak_flops(self.device)
        self.history: list[dict] = []
        self.nonfinite = {"streak": 0, "total": 0}
        self.saved_step: int | None = None  # the step of the last checkpoint written or resumed
        # on a CPU the tokenizer's encoder is a fifth of a small model's step: every image is encoded
        # once per process (genorder.trainer_token_cache; its tokens do not depend on the batch they are encoded in)
        self.token_cache: TokenCache | None = cache_for(tokenizer, dataset) if self.device.type == "cpu" else None

    # -- checkpoints --------------------------------------------------------------------------
    def _optim_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        sd = self.optimizer.state_dict()
        tensors = {}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        return tensors, {"param_groups": sd["param_groups"]}

    def _nonfinite_tensors(self) -> list[str]:
        bad = [f"model.{k}" for k, v in self.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        for pid, st in self.optimizer.state.items():
            bad += [f"optim.{pid}.{k}" for k, v in st.items()
                    if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]  # fmt: skip
        return bad

    def save(self, final: bool = False) -> None:
        """Commit model + optimizer + budget spent as one checkpoint set (rank 0); a state with a
        non-finite tensor is never written (`TrainingDiverged`)."""
        if self.sharded:
            from genorder.dcp import save_sharded

            return save_sharded(self, final)
        if not self.world.main:
            return
        from genorder.runs import commit_run_checkpoint

        bad = self._nonfinite_tensors()
        if bad:
            raise TrainingDiverged(
                f"refusing to checkpoint a non-finite state at step {self.tracker.spent.steps} "
                f"({len(bad)} tensors, e.g. {bad[0]}); the last good checkpoint (step {self.saved_step}) is kept"
            )
        spent = self.tracker.spent.as_dict()
        step = self.tracker.spent.steps
        meta = {**self.meta, "spent": spent, "step": step, "final": final, "train": self.cfg.model_dump(mode="json"),
                "nonfinite": dict(self.nonfinite)}  # fmt: skip
        tensors, ometa = self._optim_state()
        parts = {"model": (self.model.state_dict(), meta), "optim": (tensors, {**ometa, "spent": spent, "step": step})}
        commit_run_checkpoint(self.out_dir, step, parts)
        self.saved_step = step

    def resume(self) -> bool:
        """Load model, optimizer and budget spent from the run's latest checkpoint set (verified
        against its manifest) and cut log.jsonl back to its step; False when there is none."""
        from genorder.runs import latest_checkpoint, truncate_log

        found = latest_checkpoint(self.out_dir)
        if found is None:
            return False
        d, manifest = found
        from genorder.dcp import is_sharded, load_sharded

        if is_sharded(manifest):
            return load_sharded(self, d, manifest)
        state, meta = load_checkpoint(d / "model")
        tensors, ometa = load_checkpoint(d / "optim")
        bad = [k for k, v in {**state, **tensors}.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise UserError(f"checkpoint {d} holds non-finite values ({bad[0]}, ...); it cannot be resumed")
        try:
            self.model.load_state_dict(state)
            st: dict[int, dict] = {}
            for key, v in tensors.items():
                pid, name = key.split(".", 1)
                st.setdefault(int(pid), {})[name] = v.to(self.device) if name != "step" else v
            self.optimizer.load_state_dict({"state": st, "param_groups": ometa["param_groups"]})
            spent = Spent(**meta["spent"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            first = (str(err).strip().splitlines() or ["mismatch"])[0]
            raise UserError(f"checkpoint {d} does not fit this model and optimizer: {first}") from None
        if spent.steps != manifest["step"]:
            raise UserError(f"checkpoint {d}: model.json says step {spent.steps}, the manifest {manifest['step']}")
        self.tracker = BudgetTracker(self.cfg.budget, spent)
        self.nonfinite = {"streak": 0, "total": 0, **(meta.get("nonfinite") or {})}
        self.saved_step = spent.steps
        if self.world.main:
            truncate_log(self.out_dir / "log.jsonl", spent.steps)
        return True

    # -- one step -----------------------------------------------------------------------------
    def _indices(self, step: int) -> torch.Tensor:
        idx = batch_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        return idx[self.world.rank :: self.world.size]  # this process's rows of the global batch

    def _items(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.dataset[int(i)] for i in idx]
        images = torch.stack([im for im, _ in items]).to(self.device, non_blocking=True)
        labels = torch.tensor([lab for _, lab in items], dtype=torch.long, device=self.device)
        return images, labels

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._items(self._indices(step))

    def _tokens(self, step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The tokens (the tokenizer's maps, each (B, ...)) and labels (B,) of the batch at `step`:
        from the token cache where it holds them (`genorder.trainer_token_cache`), else encoded."""
        idx = self._indices(step)
        cache = self.token_cache
        if cache is not None and cache.enabled:
            missing = cache.missing(idx)
            if len(missing):
                images, labels = self._items(missing)
                with torch.no_grad():
                    cache.put(missing, self.tokenizer.encode(images), labels)
            if cache.enabled:
                return cache.get(idx)
        images, labels = self._items(idx)
        with torch.no_grad():
            return self.tokenizer.encode(images), labels

    def train_step(self, step: int, fraction: float | None = None) -> dict[str, float]:
        """One optimizer step; `fraction` of the budget spent sets the lr (default: this process's)."""
        cfg, model = self.cfg, self.model
        torch.manual_seed(cfg.seed * 7_919 + step)  # drop-path
        g = step_generator(cfg.seed, step)
        tokens, labels = self._tokens(step)
        if self.order.uses_training_progress:  # a declared capability (Order.set_training_progress)
            self.order.set_training_progress(self.tracker.fraction() if fraction is None else fraction)
        batch = self.order.training_batch(tokens, self.tokenizer, g)
        drop = (torch.rand(cfg.batch_size, generator=g) < cfg.label_drop)[self.world.rank :: self.world.size]
        labels = torch.where(drop.to(labels.device), torch.full_like(labels, model.null_class), labels)
        lr = lr_at(cfg, self.tracker.fraction() if fraction is None else fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(batch.inputs, labels)  # (B, S, V) fp32
        targets = batch.targets
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = full_norm(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))  # global under FSDP
        # a non-finite loss or gradient on any process: skip the update everywhere
        (n_bad,) = all_sum([float(not (torch.isfinite(loss) and torch.isfinite(gnorm)))], self.device)
        skipped = n_bad > 0
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        with torch.no_grad():
            pred = logits.argmax(-1)
            valid = targets != IGNORE
            n_tok = int(valid.sum())
            # over all processes: loss weighted by valid tokens, accuracy, tokens (local in one process)
            loss_sum, correct, n_tok = all_sum(
                [float(loss.detach()) * n_tok, float((pred == targets)[valid].sum()), n_tok], self.device
            )
        self.tracker.update(cfg.batch_size, int(n_tok), self.flops_per_sample * cfg.batch_size)
        out = {"step": self.tracker.spent.steps, "loss": loss_sum / max(n_tok, 1), "acc": correct / max(n_tok, 1),
               "lr": lr, "grad_norm": float(gnorm)}  # fmt: skip
        if skipped:
            out["skipped"] = True
        out.update(per_level_accuracy(pred, targets, batch.levels))
        return out

    # -- the loop -----------------------------------------------------------------------------
    def fit(
        self,
        progress: Callable[[float, dict], None] | None = None,
        log: Callable[[dict], None] | None = None,
        stop_after: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Train until the budget is spent (or `stop_after` more steps, for tests of resume, or until
        `should_stop()` turns true: then it checkpoints and returns with `stopped_by` "interrupted").

        Per-level accuracies in the log are rank 0's rows; loss, accuracy and counts are global."""
        main = self.world.main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        log_path = self.out_dir / "log.jsonl"
        t_last, img_last, done = time.perf_counter(), self.tracker.spent.images, 0
        tb = None  # the TensorBoard writer, opened at the first logged step

        def clock() -> tuple[str | None, float, bool]:
            # rank 0's view, so every process takes the same lr and stops at the same step
            stop = bool(should_stop()) if should_stop is not None else False
            return from_main((self.tracker.exhausted(), self.tracker.fraction(), stop))

        reason, fraction, stop = clock()
        while reason is None and not stop and (stop_after is None or done < stop_after):
            m = self.train_step(self.tracker.spent.steps, fraction)
            done += 1
            self.history.append(m)
            step = m["step"]
            skipped = m.get("skipped", False)
            if skipped:
                self.nonfinite["streak"] += 1
                self.nonfinite["total"] += 1
            else:
                self.nonfinite["streak"] = 0
            if step % cfg.log_every == 0 or step == 1 or skipped:
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                ips = (self.tracker.spent.images - img_last) / max(now - t_last, 1e-9)
                t_last, img_last = now, self.tracker.spent.images
                m["images_per_s"] = ips
                if self.peak:
                    m["mfu"] = ips * self.flops_per_sample / (self.peak * self.world.size)
                m.update({k: v for k, v in self.tracker.spent.as_dict().items() if k != "steps"})
                if main:
                    with log_path.open("a") as f:
                        f.write(json.dumps(m) + "\n")
                    tb = tb or tensorboard_writer(self.out_dir)
                    if tb is not None:
                        for k, v in m.items():
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                                tb.add_scalar(f"train/{k}", v, step)
                if log:
                    log(m)
            if self.nonfinite["streak"] > cfg.nonfinite_streak or self.nonfinite["total"] > cfg.nonfinite_total:
                raise TrainingDiverged(
                    f"training diverged: the loss was non-finite at step {step} "
                    f"({self.nonfinite['streak']} in a row, {self.nonfinite['total']} in all; limits "
                    f"train.nonfinite_streak={cfg.nonfinite_streak}, train.nonfinite_total={cfg.nonfinite_total}). "
                    f"Those steps were skipped and nothing was saved after them: the last good checkpoint "
                    f"(step {self.saved_step}) is kept. Lower the learning rate (now peak {cfg.peak_lr():g})."
                )
            reason, fraction, stop = clock()
            if reason is None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self.save()  # the last step is saved once, below, marked final
            if progress:
                progress(self.tracker.fraction(), m)
        if tb is not None:
            tb.close()
        if reason is None and stop:
            reason = "interrupted"
        if self.saved_step != self.tracker.spent.steps:
            self.save(final=reason not in (None, "interrupted"))
        return {"stopped_by": reason, "spent": self.tracker.spent.as_dict(), "last": self.history[-1] if self.history else {}}
