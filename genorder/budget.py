"""Training budgets as a first-class config (design question 7).

A run stops at the first limit reached among optimizer steps, images seen, wall-clock minutes and
training FLOPs, and records all four (plus tokens seen) whichever one stopped it, so that
"identical budget" is checkable after the fact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from pydantic import Field, model_validator

from genorder.config import ComponentConfig


class Budget(ComponentConfig):
    steps: int | None = Field(None, gt=0, description="optimizer steps")
    images: int | None = Field(None, gt=0, description="training images seen")
    minutes: float | None = Field(None, gt=0, description="wall-clock minutes of training")
    flops: float | None = Field(None, gt=0, description="training FLOPs (forward + backward, counted)")

    @model_validator(mode="after")
    def _one_limit(self) -> Budget:
        if all(v is None for v in (self.steps, self.images, self.minutes, self.flops)):
            raise ValueError("a budget needs at least one of steps, images, minutes, flops")
        return self


@dataclass
class Spent:
    steps: int = 0
    images: int = 0
    tokens: int = 0
    flops: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class BudgetTracker:
    """Counts what a run has spent; `exhausted()` says which limit, if any, is reached."""

    def __init__(self, budget: Budget, spent: Spent | None = None) -> None:
        self.budget = budget
        self.spent = spent or Spent()
        self._t0 = time.perf_counter() - self.spent.seconds

    def update(self, images: int, tokens: int = 0, flops: float = 0.0) -> None:
        s = self.spent
        s.steps += 1
        s.images += images
        s.tokens += tokens
        s.flops += flops
        s.seconds = time.perf_counter() - self._t0

    def exhausted(self) -> str | None:
        b, s = self.budget, self.spent
        if b.steps is not None and s.steps >= b.steps:
            return "steps"
        if b.images is not None and s.images >= b.images:
            return "images"
        if b.minutes is not None and s.seconds >= 60 * b.minutes:
            return "minutes"
        if b.flops is not None and s.flops >= b.flops:
            return "flops"
        return None

    def fraction(self) -> float:
        """Progress in [0, 1] against the tightest limit (for progress bars and LR schedules)."""
        b, s = self.budget, self.spent
        fr = []
        if b.steps is not None:
            fr.append(s.steps / b.steps)
        if b.images is not None:
            fr.append(s.images / b.images)
        if b.minutes is not None:
            fr.append(s.seconds / (60 * b.minutes))
        if b.flops is not None:
            fr.append(s.flops / b.flops)
        return min(1.0, max(fr))
