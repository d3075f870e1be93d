"""The Sampler interface and the standard sampler: logits -> tokens.

Composition (design question 5): an order asks the sampler for
  1. `guide(cond, uncond, step, num_steps)`: classifier-free guidance with a schedule over steps,
  2. `filter(logits)`: temperature, then top-k, then top-p (on the guided logits),
  3. `sample(logits, generator)`: a categorical draw seeded by a `torch.Generator`.
`__call__` chains the three. Orders never look at the settings, so an ablation switches top-k or CFG
on and off by changing only the sampler config.

CFG convention (VAR's): guided = (1 + t) * cond - t * uncond, with t = cfg * k / (K - 1) for the
`linear` schedule (VAR_SPEC §4.3) and t = cfg for `constant`. LlamaGen's scale s equals 1 + t.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from genorder.config import ComponentConfig


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set to -inf every logit strictly below the k-th largest along the last axis. k <= 0: off."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter (VAR_SPEC §4.4): sort ascending, drop tokens whose cumulative softmax mass is
    <= 1 - p. The most probable token is always kept. p <= 0 or p >= 1: off."""
    if p <= 0.0 or p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cum <= (1.0 - p)
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def categorical(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(..., V) logits -> (...) int64 draws from softmax(logits).

    Inverse-CDF sampling: one uniform u in (0, 1] per row, and the draw is the first token whose
    cumulative probability reaches u times the row's total (`torch.searchsorted` on the cumsum).
    One random number per row instead of V (the exponential race `torch.multinomial` makes draws
    an Exp(1) per token, the larger part of a CPU sampling step: docs/RESULTS.md, "Profile of the
    CPU regime"), and no host-side check, so a generation loop never waits for the device. A token
    of probability 0 (a filtered logit of -inf) is never drawn: its cumulative sum equals the
    previous token's, and u times the total is > 0 and <= the last cumulative sum. The same
    generator stream gives the same draws on one device type."""
    probs = logits.float().softmax(dim=-1)
    cum_NV = probs.reshape(-1, probs.shape[-1]).cumsum(dim=-1)  # non-decreasing along V
    u_N1 = 1.0 - torch.rand(cum_NV.shape[0], 1, generator=generator, device=cum_NV.device)  # (0, 1]
    idx_N = torch.searchsorted(cum_NV, u_N1 * cum_NV[:, -1:]).squeeze(-1)
    return idx_N.clamp_(max=probs.shape[-1] - 1).reshape(probs.shape[:-1])


def gumbel(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise, seeded."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


class Sampler:
    """Base class; `StandardSampler` below implements it. Subclasses may override any step."""

    Config: type[ComponentConfig] = ComponentConfig

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    @property
    def uses_cfg(self) -> bool:
        """True when orders must run the doubled (conditional + null-class) batch."""
        return False

    def guidance(self, step: int, num_steps: int) -> float:
        """t at this step: guided = (1 + t) cond - t uncond."""
        return 0.0

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor | None, step: int, num_steps: int) -> torch.Tensor:
        t = self.guidance(step, num_steps)
        if uncond is None or t == 0.0:
            return cond
        return (1.0 + t) * cond - t * uncond

    def filter(self, logits: torch.Tensor, step: int = 0, num_steps: int = 1) -> torch.Tensor:
        return logits

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return categorical(logits, generator)

    def __call__(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        step: int,
        num_steps: int,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, V) conditional and unconditional logits -> (tokens (B, N), filtered logits)."""
        logits = self.filter(self.guide(cond.float(), None if uncond is None else uncond.float(), step, num_steps), step, num_steps)
        return self.sample(logits, generator), logits

    def soft_codes_weights(
        self, logits: torch.Tensor, step: int, num_steps: int, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """Optional soft token weights (B, N, V) for VAR's `more_smooth` option; None when off."""
        return None


class StandardSampler(Sampler):
    """Temperature, top-k, top-p and classifier-free guidance (linear ramp or constant), seeded draws."""

    class Config(ComponentConfig):
        temperature: float = Field(1.0, gt=0.0, description="softmax temperature (logits / T)")
        top_k: int = Field(0, ge=0, description="keep the k most likely tokens; 0 = off")
        top_p: float = Field(0.0, ge=0.0, le=1.0, description="nucleus mass; 0 or 1 = off")
        cfg: float = Field(0.0, ge=0.0, description="guidance strength t_max; 0 = no CFG")
        cfg_schedule: Literal["linear", "constant"] = Field(
            "linear", description="linear: t_k = cfg*k/(K-1) (VAR); constant: t_k = cfg"
        )
        more_smooth: bool = Field(False, description="VAR's Gumbel-softmax soft codes (visuals only)")

    config: Config

    @property
    def uses_cfg(self) -> bool:
        return self.config.cfg > 0.0

    def guidance(self, step: int, num_steps: int) -> float:
        c = self.config
        if c.cfg == 0.0:
            return 0.0
        if c.cfg_schedule == "constant":
            return c.cfg
        return c.cfg * step / max(num_steps - 1, 1)

    def filter(self, logits: torch.Tensor, step: int = 0, num_steps: int = 1) -> torch.Tensor:
        c = self.config
        if c.temperature != 1.0:
            logits = logits / c.temperature
        return top_p_filter(top_k_filter(logits, c.top_k), c.top_p)

    def soft_codes_weights(self, logits, step, num_steps, generator):
        if not self.config.more_smooth:
            return None
        ratio = step / max(num_steps - 1, 1)
        tau = max(0.27 * (1 - 0.95 * ratio), 0.005)
        y = (logits * (1 + ratio) + gumbel(logits.shape, generator, logits.device)) / tau
        return y.softmax(dim=-1)


def describe(sampler: Sampler) -> str:
    """Short human summary used in logs and result JSON."""
    c = sampler.config
    parts = [f"{k}={v}" for k, v in c.model_dump().items()]
    return f"{type(sampler).__name__}({', '.join(parts)})"


