"""PAR (parallelized autoregression, arXiv 2412.15119): the map is cut into R = q x q square regions
(`regions_per_side` q, default 2: PAR-4x); the first token of every region is generated one after
another (R steps), then the tokens at the same offset in every region together, offset by offset
in row-major order inside the region (M - 1 more steps for M = (n / q)^2 cells per region). An
n x n map takes R + M - 1 steps (16 x 16, q = 2: 4 + 63 = 67).

Sequence (`genorder_plugins.fixed_order`): the R first tokens, then offset 1 of every region, offset
2, ...; attention is block-causal by step after this reordering. A position is fed the token
generated just before it in its own chain: the first token of the previous region in the
sequential phase (the start token for region 0), the previous offset of its own region in the
parallel phase, plus its learned position.
Where it differs from the paper: PAR feeds learnable transition tokens between the two phases;
here the learned per-position embedding plays that part.
"""

from __future__ import annotations

import torch
from genorder_plugins.fixed_order import FixedPlanOrder, Plan
from pydantic import Field

from genorder import ComponentConfig, UserError


def par_plan(p: int, q: int) -> Plan:
    """Regions row-major over a q x q grid, offsets row-major inside each (p / q)-sided region."""
    m = p // q
    R, M = q * q, m * m

    def cell(region: int, offset: int) -> int:
        return (region // q * m + offset // m) * p + region % q * m + offset % m

    cells, steps, sources = [], [], []
    for r in range(R):  # the first token of each region, one after another
        cells.append(cell(r, 0))
        steps.append(r)
        sources.append(cell(r - 1, 0) if r > 0 else -1)
    for o in range(1, M):  # then offset o of every region at once
        for r in range(R):
            cells.append(cell(r, o))
            steps.append(R - 1 + o)
            sources.append(cell(r, o - 1))
    return Plan(torch.tensor(cells), torch.tensor(steps), torch.tensor(sources).reshape(-1, 1))


class PAR(FixedPlanOrder):
    """Parallelized AR: the first token of each of R regions in turn, then the same offset of every region in parallel; block-causal after reordering."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(True, description="sample with the static KV cache (off: recompute every earlier step)")
        regions_per_side: int = Field(2, ge=1, description="q: the map is cut into q x q regions (PAR-4x: 2)")

    config: Config
    num_sources = 1

    def check_tokenizer(self, tokenizer) -> None:
        super().check_tokenizer(tokenizer)
        p, q = tokenizer.scales[0], self.config.regions_per_side
        if p % q:
            raise UserError(f"par: regions_per_side = {q} does not divide the {p}x{p} token map")

    def plan(self, side: int) -> Plan:
        return par_plan(side, self.config.regions_per_side)
