"""NAR (next-neighbour autoregression, arXiv 2503.10696): the map grows outwards from the top-left
corner; step d generates, in parallel, every cell at Manhattan distance d = row + column from it,
so an n x n map takes 2n - 1 steps (16 x 16: 31).

Sequence (`genorder_plugins.fixed_order`): the cells sorted by distance, row-major within a
distance; attention is block-causal by step, so each cell attends to every cell of the earlier
steps (and to the other cells of its own step, whose inputs hold only earlier tokens). A cell is fed
the tokens of its two earlier neighbours, the one above (row - 1) and the one to the left
(column - 1), each through its own embedding (a learned "none" at the border), plus its position;
the corner cell is the start token (class condition).

Where it differs from the paper: NAR predicts each new cell from its neighbours with
dimension-oriented decoding heads (one per axis, horizontal and vertical) and a proximity
attention mask (`setup_proximity_mask` in ThisisBillhe/NAR). Here the shared backbone keeps its one
head, the two neighbours enter as two input embeddings instead, and the attention is plain
block-causal by distance (every earlier step is visible, not only the neighbourhood).
"""

from __future__ import annotations

import torch
from genorder_plugins.fixed_order import FixedPlanOrder, Plan
from pydantic import Field

from genorder import ComponentConfig


def nar_plan(p: int) -> Plan:
    """Cells by Manhattan distance from (0, 0), row-major within a distance; sources (up, left)."""
    cells = sorted(range(p * p), key=lambda i: (i // p + i % p, i // p))
    steps = [i // p + i % p for i in cells]
    sources = [[(i - p) if i // p > 0 else -1, (i - 1) if i % p > 0 else -1] for i in cells]
    return Plan(torch.tensor(cells), torch.tensor(steps), torch.tensor(sources).reshape(p * p, 2))


class NAR(FixedPlanOrder):
    """Next-neighbour AR: step d generates every cell at Manhattan distance d from the corner (2n - 1 steps), block-causal by step."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(True, description="sample with the static KV cache (off: recompute every earlier step)")

    config: Config
    num_sources = 2

    def plan(self, side: int) -> Plan:
        return nar_plan(side)
