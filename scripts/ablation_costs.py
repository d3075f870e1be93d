"""Counted training FLOPs and measured CPU step times of the `fmnist` ablation rows (docs/ABLATION.md §3).

Builds every trained row's model exactly as `genorder ablate --preset fmnist` does (its order, depth,
AdaLN / q/k-norm switches; the preset's tokenizers with random weights) and times one AdamW step on
random tokens (`genorder.bench.make_train_step`, encoder excluded) after one warm-up step.

    OMP_NUM_THREADS=1 python scripts/ablation_costs.py [--batch 8]
"""

import argparse
import time

import torch

from genorder.ablation import ROWS, get_preset, train_options
from genorder.bench import make_train_step
from genorder.flops import train_flops_per_sample
from genorder.model import BackboneConfig, build_model, count_params
from genorder.registry import registry

parser = argparse.ArgumentParser()
parser.add_argument("--batch", type=int, default=8)
args = parser.parse_args()
torch.set_num_threads(1)
p = get_preset("fmnist")
dev = torch.device("cpu")
print(f"| # | order | depth | params | train GFLOP/img | PFLOP per row | s/step (batch {args.batch}) | GFLOP/s |")
print("|---|---|---|---|---|---|---|---|")
total = 0.0
for row in ROWS:
    if row.reuses is not None:
        continue
    o = train_options(row, p, seed=0)
    name, opts = p.tokenizers[row.tokens]
    torch.manual_seed(0)
    tok = registry("tokenizers").create(name, opts)
    order = registry("orders").create(o["order_name"], o["order_opts"])
    bb = BackboneConfig(depth=o["depth"], **o["backbone_opts"])
    model = build_model(order, tok, bb, 10)
    per_img = train_flops_per_sample(model)
    row_flops = per_img * p.budget["images"]
    total += row_flops
    step = make_train_step(order, tok, model, args.batch, dev, amp=False)
    step()
    t0 = time.perf_counter()
    step()
    dt = time.perf_counter() - t0
    print(f"| {row.id} | {row.order} | d{bb.depth} | {count_params(model) / 1e6:.2f}M | {per_img / 1e9:.2f} | "
          f"{row_flops / 1e15:.2f} | {dt:.2f} | {per_img * args.batch / dt / 1e9:.1f} |", flush=True)
print(f"| | per seed | | | | {total / 1e15:.1f} | | |")
