"""Data-parallel training under torchrun (DDP): the process group, who writes, and reductions.

    torchrun --nproc_per_node 8 $(which genorder) train --order next-scale --depth 16 --tokenizer CKPT

`init_from_env` joins the group torchrun describes in the environment (WORLD_SIZE > 1; NCCL on CUDA,
gloo on a CPU) and is a no-op otherwise, so the same code runs in one process. The trainer takes
the same global batch at every step as a single process would and gives rank r the rows r, r + W,
r + 2W, ...; DDP averages the gradients, so with a per-token loss whose valid-token count is the
same on every rank (next-scale, raster) a W-process run follows the single-process one
(tested on the CPU with gloo). Only rank 0 writes logs, checkpoints and grids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the initialised group (rank 0 of 1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def init_from_env(device_type: str) -> World:
    """Join torchrun's process group when WORLD_SIZE > 1 (once); otherwise a single-process World."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return World()
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over the group (identity in one process)."""
    if world().size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank (so that every rank takes the same decision)."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave(wait: bool = True) -> None:
    """Leave the group at the end of the command (no-op without one). With `wait`, every rank first
    waits for the others (rank 0 still samples the grid after training), so that no process exits
    with the group's threads alive, which gloo answers with an abort ("terminate called without an
    active exception")."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
