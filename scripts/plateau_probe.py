"""How far one ablation row is from its plateau at several budgets, from one training run.

Trains one row of an ablation preset (genorder/ablation.py) for --steps under the wsd schedule and
saves, as cool-down branches of that one trunk (genorder/cooldown.py), the weights a run of each
fraction in --ends of the length would end with. Prints the held-out token loss (the first 500 test
images, as `genorder ablate`'s plateau.json) of each, and the plateau test at each length L that has
its 0.8·L run among them: the relative improvement from the 0.8·L run to the L run (flat below 2%).

    python scripts/plateau_probe.py --row 8 --steps 2000 --ends 0.4,0.5,0.6,0.75,0.8,1 \\
        --tokenizers runs/ablate-plateau/tokenizers --out runs/probe

`--plain` trains the row without AdaLN and q/k norm (rows 8 and 9 as they were before 2026-11-30).
The tokenizers are the preset's, trained by `genorder ablate` (OUT/tokenizers/<name>/tokenizer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from genorder.ablation import get_preset, row_by_id, sampler_options, train_options
from genorder.checkpoint import load_checkpoint, read_meta
from genorder.data import load_dataset
from genorder.experiments._bridge import point_saver, points_folder, train_run
from genorder.heldout import heldout_loss, plateau
from genorder.runs import load_run
from genorder.trainer import resolve_device

HELDOUT_N = 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="fmnist-plateau")
    ap.add_argument("--row", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ends", default="0.4,0.5,0.6,0.75,0.8,1", help="fractions of --steps to save runs of")
    ap.add_argument("--plain", action="store_true", help="no AdaLN, no q/k norm")
    ap.add_argument("--tokenizers", type=Path, required=True, help="OUT/tokenizers of an ablation with this preset")
    ap.add_argument("--out", type=Path, default=Path("runs/probe"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=None, help="peak lr (default: the preset's)")
    args = ap.parse_args()
    if args.lr is not None and args.lr <= 0:
        ap.error(f"--lr must be positive, got {args.lr}")
    torch.set_num_threads(args.threads)

    p = dataclasses.replace(get_preset(args.preset), budget={"steps": args.steps})
    row = row_by_id(args.row)
    if args.plain:
        row = dataclasses.replace(row, adaln=False, qk_norm=False)
    tok = args.tokenizers / p.tokenizers[row.tokens][0] / "tokenizer"
    vocab = int(read_meta(tok)["config"]["vocab_size"])
    lr_tag = f"-lr{args.lr:g}" if args.lr is not None else ""
    rdir = args.out / f"r{row.id}{'-plain' if args.plain else ''}-s{args.seed}-{args.steps}{lr_tag}"
    ends = sorted(float(x) for x in args.ends.split(","))
    opts = train_options(row, p, args.seed, "cpu")
    if args.lr is not None:
        opts["train_opts"] = {**opts["train_opts"], "lr": args.lr}
    torch.manual_seed(args.seed)
    train_run(opts["order_name"], rdir, dataset_spec=p.dataset, tokenizer_spec=str(tok), depth=opts["depth"],
              budget=opts["budget"], backbone_opts=opts["backbone_opts"], train_opts=opts["train_opts"],
              order_opts=opts["order_opts"], sampler_opts=sampler_options(row, vocab),
              resume=(rdir / "model.json").exists(), samples_per_class=0,
              on_step=point_saver(rdir, anneal=True, ends=ends))  # fmt: skip

    run = load_run(rdir, resolve_device("cpu"))
    train = load_dataset(p.dataset, "train")
    test = load_dataset(p.dataset, "test", image_size=train.image_size, channels=train.channels)
    losses: dict[int, float] = {}
    for f in sorted((rdir / points_folder()).glob("step-*.safetensors")):
        state, meta = load_checkpoint(f.with_suffix(""))
        run.model.load_state_dict(state)
        losses[meta["step"]] = heldout_loss(run.order, run.tokenizer, run.model, test.images[:HELDOUT_N], test.labels[:HELDOUT_N])
    tests = {}
    for end, loss in losses.items():
        cut = round(0.8 * end)
        if cut in losses:
            tests[end] = plateau([(cut, losses[cut]), (end, loss)])["improvement"]
    (rdir / "probe.json").write_text(json.dumps({"row": row.id, "plain": args.plain, "seed": args.seed,
                                                 "heldout_loss": losses, "plateau": tests}, indent=1))  # fmt: skip
    print(f"row {row.id}{' (plain)' if args.plain else ''} seed {args.seed}: held-out loss of the run of each length")
    for end, loss in losses.items():
        note = f"  last 20%: {100 * tests[end]:.2f}%{' (flat)' if tests[end] < 0.02 else ''}" if end in tests else ""
        print(f"  {end:6d} steps  {loss:.4f}{note}")


if __name__ == "__main__":
    main()
