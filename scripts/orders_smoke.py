"""Smoke run of the orders of issue 23: each order (and option) trains a few steps on a tiny shapes
dataset and samples a grid, to show it learns above chance. Not the controlled comparison.

    .venv/bin/python scripts/orders_smoke.py --out /tmp/orders_smoke [--steps 30] [--seeds 0]

Per run it prints the held-out token loss (nats per target token, `genorder.heldout`) before and
after training, against two chance levels: log V (uniform) and the unigram entropy of the test
tokens (a model that knows only how often each id occurs). It writes `<out>/<label>.png` (8 samples
per class, CFG 1.5, top-k 8) and `<out>/smoke.json`. Tokenizer: `pixel` (the genorder-pixel example:
8x8 grid of 16 grey levels, no training), so no tokenizer run is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from genorder.data import SHAPE_CLASSES, load_dataset, render_shapes
from genorder.generation import make_generator
from genorder.heldout import heldout_loss
from genorder.images import save_grid
from genorder.model import BackboneConfig, build_model
from genorder.registry import registry
from genorder.sampler import StandardSampler
from genorder.trainer import TrainConfig, Trainer

RUNS = [
    ("raster", "raster", {}),
    ("raster-zcurve", "raster", {"scan": "zcurve"}),
    ("raster-spiral-in", "raster", {"scan": "spiral-in"}),
    ("maskgit", "maskgit", {}),
    ("maskgit-random", "maskgit", {"unmask_order": "random"}),
    ("maskgit-halton", "maskgit", {"unmask_order": "halton"}),
    ("random-ar", "random-ar", {}),
    ("random-ar-tokens", "random-ar", {"instruct": "tokens"}),
    ("rar", "rar", {}),
    ("nar", "nar", {}),
    ("par", "par", {}),
]


def unigram_entropy(tokens: torch.Tensor, vocab: int) -> float:
    p = torch.bincount(tokens.flatten(), minlength=vocab).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-3)
    ap.add_argument("--seeds", type=str, default="0")
    ap.add_argument("--only", type=str, default="", help="comma-separated run labels (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    npz = args.out / "shapes16.npz"
    if not npz.is_file():
        tr, tl = render_shapes(512, 16, seed=1)
        te, tel = render_shapes(128, 16, seed=2)
        np.savez(npz, images=tr[:, :1].numpy(), labels=tl.numpy(), test_images=te[:, :1].numpy(),
                 test_labels=tel.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip
    train = load_dataset(f"npz:{npz}", "train")
    test = load_dataset(f"npz:{npz}", "test")
    tok = registry("tokenizers").create("pixel", {"grid": 8, "levels": 16, "image_size": 16, "channels": 1})
    V = tok.codebook_size
    x_test, y_test = test.get_batch(torch.arange(len(test)))
    chance = {"uniform": math.log(V), "unigram": unigram_entropy(tok.encode(x_test)[0], V)}
    print(f"chance: log V = {chance['uniform']:.3f}, unigram entropy of the test tokens = {chance['unigram']:.3f}")
    only = {s for s in args.only.split(",") if s}
    results = []
    for label, name, opts in RUNS:
        if only and label not in only:
            continue
        for seed in [int(s) for s in args.seeds.split(",")]:
            torch.manual_seed(seed)
            order = registry("orders").create(name, opts)
            model = build_model(order, tok, BackboneConfig(depth=2, width=64, heads=2, drop_path=0.0), train.num_classes)
            cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, budget={"steps": args.steps}, device="cpu",
                              checkpoint_every=None, seed=seed)  # fmt: skip
            trainer = Trainer(order, tok, model, train, cfg, args.out / f"run-{label}-{seed}", {})
            before = heldout_loss(order, tok, model, x_test, y_test)
            t0 = time.perf_counter()
            for step in range(args.steps):
                trainer.train_step(step, fraction=step / args.steps)
            secs = time.perf_counter() - t0
            after = heldout_loss(order, tok, model, x_test, y_test)
            labels = torch.arange(train.num_classes).repeat_interleave(8)
            sampler = StandardSampler(StandardSampler.Config(cfg=1.5, top_k=8))
            maps = order.generate(model, tok, labels, sampler, make_generator(seed, "cpu"))
            save_grid(tok.decode(maps), args.out / f"{label}-seed{seed}.png", nrow=8, scale=4)
            row = {"label": label, "order": name, "options": opts, "seed": seed, "steps": args.steps,
                   "heldout_before": before, "heldout_after": after, "train_seconds": secs,
                   "generation_steps": order.num_steps(order.layout(tok))}  # fmt: skip
            results.append(row)
            print(f"{label:18s} seed {seed}: held-out {before:.3f} -> {after:.3f} "
                  f"({'below' if after < chance['unigram'] else 'NOT below'} unigram {chance['unigram']:.3f}); "
                  f"{row['generation_steps']} sampling steps; {secs:.1f} s")  # fmt: skip
    (args.out / "smoke.json").write_text(json.dumps({"chance": chance, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
