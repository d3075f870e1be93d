"""`genorder scale`: the scaling law of every order (VAR §4.1) — several model sizes per order at the
same tokens per parameter, held-out token loss against parameters and training FLOPs, a power-law
fit per order with the exponent's interval and Pearson r, one log-log figure with the
compute-optimal frontier. Resumable: every finished point is one line of OUT/points.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer
from rich.table import Table

from genorder.checkpoint import read_meta
from genorder.config import build_config
from genorder.data import class_balanced_labels, load_dataset
from genorder.errors import UserError
from genorder.flops import train_flops_per_sample
from genorder.hashing import dataset_fingerprint, short, tensors_fingerprint
from genorder.model import BackboneConfig, build_model, count_params
from genorder.parallel import Job, run_jobs
from genorder.registry import registry
from genorder.runs import load_run, run_started, write_json
from genorder.scaling import (
    Plan,
    ScaleConfig,
    check_orders,
    compare_exponents,
    done_keys,
    fits_by_order,
    frontier,
    plan_budget,
    plot_scaling,
    point_key,
    read_points,
    train_key,
    append_point,
    test_token_loss,
)
from genorder.trainer import resolve_device
from genorder_cli.app import app, console, guarded, parse_csv
from genorder.training_run import train_run
from genorder_cli.common import make_sampler, resolve_tokenizer

Opt = typer.Option


def _class_accuracy(run, dataset_spec: str, n: int, cfg: float, seed: int, device: torch.device) -> dict | None:
    """Class consistency of n class-balanced samples (`genorder.classifier`), or None where that
    module is not installed yet. The one place `scale` calls the classifier."""
    try:
        from genorder.classifier import class_accuracy, load_or_train_classifier
    except ImportError:
        return None
    from genorder.sampling import generate_images

    clf, info = load_or_train_classifier(dataset_spec, device=str(device))
    labels = class_balanced_labels(run.model.num_classes, n)
    images = generate_images(run, labels, make_sampler({}, cfg=cfg), seed=seed, batch_size=100)
    res = class_accuracy(clf, images, labels.to(images.device))
    return {**res, "classifier_test_accuracy": info.get("test_accuracy")}


def scale_point(p: Plan, key: str, rdir: Path, cfg: ScaleConfig, dataset: str, tokenizer_stem: str, device: str,
                dev: torch.device, quiet: bool) -> dict:  # fmt: skip
    """Job: train one point (or finish / reuse its run) and score it; returns its points.jsonl record."""
    test_ds = load_dataset(dataset, "test")
    if not (rdir / "model.json").exists() or not read_meta(rdir / "model").get("final"):
        bb = cfg.backbone(p.depth)
        train_run(
            p.order, rdir, dataset_spec=dataset, tokenizer_spec=tokenizer_stem, depth=p.depth,
            budget={"steps": p.steps}, backbone_opts={"width": bb["width"], "heads": bb["heads"]},
            train_opts={"batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed, "device": device},
            resume=run_started(rdir), samples_per_class=4, quiet=quiet,
        )  # fmt: skip
    run = load_run(rdir, dev)
    meta = read_meta(rdir / "model")
    held = test_token_loss(run.order, run.tokenizer, run.model, test_ds, cfg.eval_n, cfg.eval_batch, cfg.seed)
    acc = _class_accuracy(run, dataset, cfg.accuracy_n, cfg.cfg, cfg.seed, dev) if cfg.accuracy_n else None
    spent = meta["spent"]
    return {
        "key": key, "order": p.order, "depth": p.depth, "width": p.width, "params": p.params,
        "tokens_per_image": p.tokens_per_image, "steps": spent["steps"], "images": spent["images"],
        "tokens": spent["tokens"], "flops": spent["flops"], "train_seconds": spent["seconds"],
        "loss": held["loss"], "token_acc": held["acc"], "eval_images": held["images"], "eval_tokens": held["tokens"],
        "class_acc": acc, "class_error": (1 - acc["acc"]) if acc else None, "run": str(rdir),
        "device": str(dev),
    }  # fmt: skip


def _tokenizer_shape(spec: str | None, order, dataset, device: torch.device):
    """A checkpoint loaded, or the preset `resolve_tokenizer` would train, built untrained (its
    scales and V are all a plan needs)."""
    from genorder.runs import load_tokenizer
    from genorder.tokenizer_training import configure_for_dataset
    from genorder_cli.common import is_checkpoint_spec, tokenizer_stem

    if spec and is_checkpoint_spec(spec):
        return load_tokenizer(tokenizer_stem(spec), device)[0]
    name, opts = configure_for_dataset(spec, order.tokenizer_kind, dataset.channels, dataset.image_size)
    return registry("tokenizers").create(name, opts)


def _plan(cfg: ScaleConfig, tokenizers: dict[str, Any], num_classes: int) -> list[Plan]:
    plans = []
    for name in cfg.orders:
        order = registry("orders").create(name, {})
        tok = tokenizers[order.tokenizer_kind]
        L = order.layout(tok).length
        for d in cfg.depths:
            bb = BackboneConfig(**cfg.backbone(d))
            model = build_model(order, tok, bb, num_classes)
            params = count_params(model)
            steps, images = plan_budget(cfg, params, L)
            plans.append(Plan(name, d, bb.C, params, L, steps, images, train_flops_per_sample(model) * images))
    return plans


def _fmt_ci(ci) -> str:
    return "—" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


@app.command("scale")
@guarded
def scale(
    orders: Annotated[Optional[str], Opt(help="comma-separated orders (default: every registered order; see `genorder plugins`)")] = None,
    depths: Annotated[str, Opt(help="comma-separated depths, at least 3 (4 or more for a law worth the name)")] = "1,2,3,4",
    width_per_depth: Annotated[int, Opt(help="width C = this x depth (the backbone's default is 64)")] = 64,
    tokens_per_param: Annotated[float, Opt(help="target tokens seen per parameter, the same for every point")] = 20.0,
    dataset: Annotated[str, Opt(help="fashion-mnist, shapes, imagefolder:PATH or npz:PATH")] = "fashion-mnist",
    tokenizer_multi: Annotated[Optional[str], Opt(help="tokenizer of the orders that take multi-scale tokens: a checkpoint, or a preset trained first when not cached (default: the preset declared for the dataset's shape)")] = None,
    tokenizer_single: Annotated[Optional[str], Opt(help="tokenizer of the orders that take single-scale tokens (same rules)")] = None,
    tokenizer_steps: Annotated[int, Opt(help="steps when a tokenizer preset has to be trained first")] = 300,
    batch_size: Annotated[int, Opt(help="images per optimizer step, every point")] = 64,
    lr: Annotated[float, Opt(help="peak learning rate, every point")] = 2e-3,
    seed: Annotated[int, Opt(help="seed of initialisation, data order and sampling")] = 0,
    eval_n: Annotated[int, Opt(help="test images for the held-out token loss")] = 1000,
    accuracy_n: Annotated[int, Opt(help="class-consistency samples per point (0: off; needs genorder.classifier)")] = 0,
    bootstrap: Annotated[int, Opt(help="bootstrap resamples of the points for the exponent's interval")] = 2000,
    device: Annotated[str, Opt(help="auto, cpu, cuda")] = "auto",
    out: Annotated[Path, Opt(help="folder: points.jsonl, scaling.json, scaling_flops.png, scaling_params.png, runs/")] = Path("runs/scale"),
    plan_only: Annotated[bool, Opt("--plan-only", help="print the points (params, steps, FLOPs) and write nothing")] = False,
    workers: Annotated[int, Opt(help="processes that train points side by side, 1 torch thread each when N > 1 (one per CPU core is a good choice on a CPU); the points do not depend on it")] = 1,
) -> None:
    """Train every order at several sizes under the same tokens per parameter; fit L = a·X^b per order."""
    cfg = build_config(ScaleConfig, {
        "orders": parse_csv(orders) or None, "depths": parse_csv(depths, int), "width_per_depth": width_per_depth,
        "tokens_per_param": tokens_per_param, "batch_size": batch_size, "lr": lr, "seed": seed, "eval_n": eval_n,
        "accuracy_n": accuracy_n,
    }, section="scale")  # fmt: skip
    check_orders(cfg.orders)
    if len(set(cfg.depths)) != len(cfg.depths):
        raise UserError(f"--depths lists a depth twice: {depths}")
    if bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    dev = resolve_device(device)
    if cfg.accuracy_n:
        try:
            import genorder.classifier  # noqa: F401
        except ImportError:
            raise UserError("--accuracy-n needs genorder.classifier, which this installation lacks; use --accuracy-n 0") from None
    train_ds = load_dataset(dataset, "train")
    test_ds = load_dataset(dataset, "test")
    if len(test_ds) < 2:
        raise UserError(f"{dataset}: the test split holds {len(test_ds)} images; the held-out loss needs more")

    kinds = {registry("orders").create(o, {}).tokenizer_kind: o for o in cfg.orders}
    tokenizers, stems = {}, {}
    for kind, order_name in kinds.items():
        spec = tokenizer_multi if kind == "multi-scale" else tokenizer_single
        order = registry("orders").create(order_name, {})
        if plan_only:  # the tokenizer's shape is enough for the plan: never train one here
            tokenizers[kind], stems[kind] = _tokenizer_shape(spec, order, train_ds, dev), None
        else:
            tokenizers[kind], stems[kind] = resolve_tokenizer(spec, order, dataset, train_ds, dev, tokenizer_steps)
    context = {
        "dataset": dataset_fingerprint(train_ds), "test": dataset_fingerprint(test_ds),
        "tokenizers": {k: tensors_fingerprint(t.state_dict()) for k, t in sorted(tokenizers.items())},
    }  # fmt: skip
    plans = _plan(cfg, tokenizers, train_ds.num_classes)
    keys = {p.name: point_key(cfg, p, context) for p in plans}
    have = done_keys(read_points(out / "points.jsonl"))

    t = Table(title=f"scale: {len(plans)} points, {cfg.tokens_per_param:g} tokens per parameter")
    for col in ("point", "params", "tokens/img", "steps", "images", "TFLOP", "status"):
        t.add_column(col, justify="left" if col in ("point", "status") else "right")
    for p in plans:
        t.add_row(p.name, f"{p.params:,}", str(p.tokens_per_image), f"{p.steps:,}", f"{p.images:,}",
                  f"{p.train_flops / 1e12:.3g}", "done" if keys[p.name] in have else "to train")  # fmt: skip
    console.print(t)
    if plan_only:
        return

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scale-config.json", {"config": cfg.model_dump(mode="json"), "dataset": dataset, "context": context,
                                           "tokenizers": {k: str(v) for k, v in stems.items()}})  # fmt: skip
    order_kind = {o: registry("orders").create(o, {}).tokenizer_kind for o in cfg.orders}
    if cfg.accuracy_n and not plan_only:
        from genorder.classifier import load_or_train_classifier

        with console.status("class-consistency classifier (trained once per dataset content, then cached)"):
            load_or_train_classifier(dataset, device=str(dev))  # before the workers, which then only read it
    jobs = []
    for i, p in enumerate(plans):
        if keys[p.name] in have:
            console.print(f"{p.name}: already in points.jsonl, skipping")
            continue
        # one folder per trained model: another budget or tokenizer trains anew, other scoring does not
        rdir = out / "runs" / f"{p.name}-{short(train_key(cfg, p, context), 8)}"
        jobs.append(Job(p.name, scale_point, (p, keys[p.name], rdir, cfg, dataset, str(stems[order_kind[p.order]]), device,
                                              dev, workers > 1),
                        cost=float(p.train_flops) if workers > 1 else -i))  # in parallel the largest first; else in order  # fmt: skip

    def written(name: str, point: dict) -> None:
        append_point(out / "points.jsonl", point)  # each point as it finishes: the sweep resumes from here
        acc = point["class_acc"]
        console.print(f"{name}: test loss {point['loss']:.4f} · {point['flops'] / 1e12:.3g} TFLOP"
                      + (f" · class acc {acc['acc']:.3f}" if acc else ""))  # fmt: skip

    wthreads = torch.get_num_threads() if workers == 1 else 1
    run_jobs(jobs, workers=workers, threads=wthreads, on_result=written)

    _report(out, cfg, [q for q in read_points(out / "points.jsonl") if q.get("key") in set(keys.values())], bootstrap)


def _report(out: Path, cfg: ScaleConfig, points: list[dict], n_boot: int) -> None:
    fits = fits_by_order(points, "loss", n_boot, cfg.seed)
    acc_points = [p for p in points if p.get("class_error") is not None]
    fits_err = fits_by_order(acc_points, "class_error", n_boot, cfg.seed) if acc_points else {}
    fr = frontier(points)
    data = {
        "config": cfg.model_dump(mode="json"), "points": points, "fits": {"loss": fits, "class_error": fits_err},
        "frontier": fr, "exponents_differ": {x: compare_exponents(fits, x) for x in ("params", "flops")},
    }  # fmt: skip
    write_json(out / "scaling.json", data)
    title = f"test token loss, {cfg.tokens_per_param:g} tokens/param"
    plot_scaling(points, fits, out / "scaling_flops.png", "flops", "loss", f"{title}: against training FLOPs")
    plot_scaling(points, fits, out / "scaling_params.png", "params", "loss", f"{title}: against parameters")
    t = Table(title="power law per order: test loss = a · X^b (log-log least squares)")
    for col in ("order", "X", "points", "b", "95% (regression)", "95% (bootstrap)", "Pearson r"):
        t.add_column(col, justify="left" if col in ("order", "X") else "right")
    for order, by_x in fits.items():
        for x, f in by_x.items():
            if "b" not in f:
                t.add_row(order, x, str(f.get("n", 0)), "—", f.get("error", ""), "", "")
                continue
            t.add_row(order, x, str(f["n"]), f"{f['b']:+.4f}", _fmt_ci(f["b_ci_t"]), _fmt_ci(f["b_ci_boot"]), f"{f['r']:+.4f}")
    console.print(t)
    if fr:
        console.print("frontier (lowest loss for the FLOPs): " + ", ".join(f"{q['order']}-d{q['depth']}" for q in fr))
    console.print(f"wrote {out / 'scaling.json'}, {out / 'scaling_flops.png'}, {out / 'scaling_params.png'}")
