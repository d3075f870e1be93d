"""Validate the paired statistics (issue 22, item 5) on the trained runs of a `genorder compare` output.

For one run of the output (--order, --seed; default: the first found): the A/A test (a pool of that
model's samples split into two arms of label-matched seed sets, --pairs times: the interval of A - B
must cover 0 in about 95% of the pairs, in class accuracy and the classifier-feature FD) and the
planted effect (the same run sampled at temperature 1.0 and at --hot, on the same paired designs:
it must be detected). Writes a JSON the docs can be generated from (the command, the date, the CPU
model, every figure), and prints a summary.

    python scripts/stats_validation.py runs/compare --json runs/compare/stats_validation.json

The classifier is the comparison's own (the content-keyed cache under --classifier-cache), the
reference the dataset's test split; nothing is trained here but, where it is not cached yet, the
classifier.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from genorder import StandardSampler
from genorder.checkpoint import read_meta
from genorder.classifier import load_or_train_classifier
from genorder.classifier_fd import FrechetToReference, classifier_features
from genorder.data import load_dataset
from genorder.errors import UserError
from genorder.runs import load_run, write_json
from genorder.validation import aa_check, planted_check, score_design


def find_runs(root: Path) -> list[Path]:
    """Run directories (model.json of component "run") under root, shallowest first; a run's own
    checkpoint folders are not runs of their own."""
    out = []
    for meta_path in sorted(root.rglob("model.json"), key=lambda p: (len(p.parts), str(p))):
        if "checkpoints" in meta_path.parts[len(root.parts):]:
            continue
        try:
            if read_meta(meta_path.with_suffix("")).get("component") == "run":
                out.append(meta_path.parent)
        except (UserError, OSError, ValueError):
            continue
    return out


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="a `genorder compare` output folder (its run directories are found below it)")
    ap.add_argument("--order", default=None, help="the order whose run is used (default: the first run found)")
    ap.add_argument("--seed", type=int, default=None, help="the training seed of that run (default: the first)")
    ap.add_argument("--dataset", default=None, help="dataset spec (default: the run's own)")
    ap.add_argument("--classifier-cache", type=Path, default=Path("runs/classifiers"))
    ap.add_argument("--pool", type=int, default=6000, help="A/A: samples in the pool")
    ap.add_argument("--seeds", type=int, default=3, help="seed sets per arm")
    ap.add_argument("--per-seed", type=int, default=500, help="samples per seed set (a multiple of the classes)")
    ap.add_argument("--pairs", type=int, default=40, help="A/A replicate pairs")
    ap.add_argument("--planted-n", type=int, default=1000, help="planted effect: samples per seed set")
    ap.add_argument("--hot", type=float, default=1.6, help="planted effect: the other temperature")
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/stats_validation.json")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        runs = find_runs(args.out)
        if not runs:
            raise UserError(f"{args.out}: no run directories (model.json) below it")
        chosen = None
        for path in runs:
            meta = read_meta(path / "model")
            if args.order and meta["order"]["name"] != args.order:
                continue
            if args.seed is not None and ((meta.get("identity") or {}).get("train") or {}).get("seed") != args.seed:
                continue
            chosen = path
            break
        if chosen is None:
            raise UserError(f"{args.out}: no run of order {args.order!r} and seed {args.seed}")
        t0 = time.perf_counter()
        run = load_run(chosen)
        dataset = args.dataset or ((run.meta.get("identity") or {}).get("dataset") or {}).get("spec") or run.meta.get("dataset")
        if not dataset:
            raise UserError(f"{chosen}: the run does not record its dataset; pass --dataset")
        clf, clf_info = load_or_train_classifier(dataset, cache_root=args.classifier_cache, image_size=run.tokenizer.image_size)
        test = load_dataset(dataset, "test", image_size=run.tokenizer.image_size, channels=run.tokenizer.channels)
        real = FrechetToReference(classifier_features(clf, test.images))
        K = run.model.num_classes

        def sampler(t: float) -> StandardSampler:
            return StandardSampler(StandardSampler.Config(temperature=t))

        pool = score_design(run.order, run.tokenizer, run.model, clf, sampler(1.0), args.pool, seed=1000, block=args.block)
        aa = aa_check(pool, real, num_classes=K, seeds=args.seeds, per_seed=args.per_seed, pairs=args.pairs)
        cold = [score_design(run.order, run.tokenizer, run.model, clf, sampler(1.0), args.planted_n, s, args.block)
                for s in range(args.seeds)]  # fmt: skip
        hot = [score_design(run.order, run.tokenizer, run.model, clf, sampler(args.hot), args.planted_n, s, args.block)
               for s in range(args.seeds)]  # fmt: skip
        planted = planted_check(cold, hot, real)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "note": "deterministic on one machine; may differ across CPU models",
        "run": str(chosen), "order": run.order_name, "dataset": dataset,
        "classifier": {"path": clf_info["path"], "test_accuracy": clf_info["test_accuracy"]},
        "block": args.block, "aa": aa,
        "planted": {"a": "temperature 1.0", "b": f"temperature {args.hot}", "seeds": args.seeds,
                    "per_seed": args.planted_n, **planted},
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    path = args.json or args.out / "stats_validation.json"
    write_json(path, result)
    for metric, m in aa["metrics"].items():
        print(f"A/A {metric}: covered 0 in {m['covered']}/{aa['pairs']} pairs, false-positive rate "
              f"{m['false_positive_rate']:.3f} (nominal 0.05 ± {aa['binomial_se']:.3f})")  # fmt: skip
    for metric in ("class_acc", "classifier_fd"):
        c = planted[metric]
        print(f"planted (T 1.0 vs {args.hot}) {metric}: {c['diff']['estimate']:+.4f} "
              f"[{c['diff']['lo']:+.4f}, {c['diff']['hi']:+.4f}] -> {c['verdict']} (mdd {c['mdd']:.4f})")  # fmt: skip
    print(f"wrote {path}")
    print(json.dumps({"seconds": round(result["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
