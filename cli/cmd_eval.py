"""`genorder eval`: FID, KID and precision/recall of a run's samples, of a saved .npz of samples,
or of a tokenizer's reconstructions (with PSNR), against the dataset's test split."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import torch
import typer
from rich.table import Table

from genorder.data import class_balanced_labels, load_dataset
from genorder.errors import UserError
from genorder.images import to_uint8
from genorder.runs import load_run, load_tokenizer, write_json
from genorder.scoring import (  # noqa: F401 - the library's, re-exported
    INCEPTION,
    _psnr,
    check_extractor,
    class_consistency,
    classifier_cache_dir,
    reconstruct,
    record,
    score_images,
)
from genorder.trainer import resolve_device
from genorder_cli.app import app, console, guarded, progress_bar
from genorder_cli.app import err_console
from genorder.data import set_holdout
from genorder_cli.common import (
    HoldoutOpt,
    ImageSizeOpt,
    ThreadsOpt,
    generate_with_bar,
    make_sampler,
    set_threads,
    stage_renderers,
    tokenizer_stem,
    with_tokenizer,
)

Opt = typer.Option


def _score(images: torch.Tensor, dataset: str, **options: Any) -> dict[str, Any]:
    """`score_images` with its progress drawn as rich bars and spinners."""
    with ExitStack() as stack:
        r = stage_renderers(stack)
        return score_images(images, dataset, on_progress=r["on_progress"], on_status=r["on_status"], **options)


def print_metrics(title: str, rec: dict[str, Any]) -> None:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    m = rec["metrics"]
    rows = [("FID", m.get("fid"), "{:.3f}")]
    if m.get("fid_floor") is not None:
        rows.append((f"FID floor: real vs real at n = {rec['n_fake']}", m["fid_floor"], "{:.3f}"))
    if m.get("fid_bootstrap"):
        lo, hi = m["fid_bootstrap"]["ci95"]
        rows.append((f"FID 95% interval ({m['fid_bootstrap']['reps']} bootstrap reps)", f"[{lo:.3f}, {hi:.3f}]", "{}"))
    rows += [("KID ×10³", None if m.get("kid_mean") is None else 1e3 * m["kid_mean"], "{:.3f}"),
             ("KID std ×10³", None if m.get("kid_std") is None else 1e3 * m["kid_std"], "{:.3f}"),
             ("precision", m.get("precision"), "{:.3f}"), ("recall", m.get("recall"), "{:.3f}")]  # fmt: skip
    if "psnr" in m:
        rows.append(("PSNR (dB)", m["psnr"], "{:.2f}"))
    if m.get("class_acc"):
        c = m["class_acc"]
        rows.append((f"class accuracy, 95% interval (classifier: {100 * c['classifier_test_accuracy']:.1f}% on real test images)",
                     f"{100 * c['acc']:.1f}% [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]", "{}"))  # fmt: skip
    rows.append(("Inception Score", "n/a (no classifier weights offline)", "{}"))
    for name, value, fmt in rows:
        t.add_row(name, "—" if value is None else fmt.format(value))
    console.print(t)
    console.print(f"{rec['n_fake']} images vs {rec['reference']['n']} reference ({rec['reference']['dataset']} test) · "
                  f"extractor {rec['feature_extractor']}", highlight=False)  # fmt: skip


def _eval_ref_batch(samples: Path, ref_batch: Path, extractor: str, dev, batch_size: int, out):
    """--samples NPZ --ref-batch REF: FID (and precision/recall when REF has images) as ADM's
    evaluator computes it, in the same Inception pool3 space (docs/EVAL.md)."""
    from genorder.adm import read_reference, read_samples
    from genorder.metrics import fid_against_reference

    if not samples.is_file():
        raise UserError(f"--samples: {samples} not found")
    images, _ = read_samples(samples)
    ref = read_reference(ref_batch)
    fake = torch.from_numpy(images)  # every sample (the protocol scores all 50,000; --n does not apply)
    with progress_bar("sample features", total=len(fake)) as update:
        m = fid_against_reference(fake, ref.mu, ref.sigma, None if ref.images is None else torch.from_numpy(ref.images),
                                  extractor=extractor, device=dev, batch_size=batch_size,
                                  progress=lambda d, t: update(d, t))  # fmt: skip
    rec = record("samples-ref-batch", m, samples=str(samples), ref_batch=str(ref_batch), n=len(fake), device=str(dev),
                 scoring_seconds=m["seconds"])  # fmt: skip
    rec["metrics"].update({k: m[k] for k in ("fid_source", "fid_from_images", "sfid", "sfid_reason") if k in m})
    rec["reference"] = {"n": m.get("n_ref_images", "mu/sigma"), "dataset": f"ADM reference batch {ref_batch.name}",
                        "statistics": "mu/sigma" if ref.mu is not None else "from its images"}  # fmt: skip
    return rec, out or samples.with_suffix(".eval.json"), f"{samples} · {len(fake)} images vs {ref_batch}"


@app.command("eval")
@guarded
def eval_cmd(
    run: Annotated[Optional[Path], Opt(help="run directory: score n generated samples")] = None,
    tokenizer: Annotated[Optional[Path], Opt(help="tokenizer checkpoint (file, or a tokenizer / run folder): reconstruction FID and PSNR; with --run: decode the samples with it instead of the run's copy")] = None,
    samples: Annotated[Optional[Path], Opt(help="a uint8 .npz of samples: ADM's arr_0 (N, H, W, 3) from `genorder sample --npz`, or 'images' (N, C, H, W)")] = None,
    ref_batch: Annotated[Optional[Path], Opt(help="with --samples: an ADM reference batch .npz (mu/sigma and/or arr_0), e.g. VIRTUAL_imagenet256_labeled.npz: the papers' FID of every sample (--n does not apply; docs/EVAL.md)")] = None,
    dataset: Annotated[Optional[str], Opt(help="reference dataset for --tokenizer/--samples (a run knows its own)")] = None,
    holdout: HoldoutOpt = None,
    n: Annotated[int, Opt(help="images to generate / reconstruct")] = 1000,
    seed: Annotated[int, Opt(help="sampling seed")] = 0,
    cfg: Annotated[Optional[float], Opt(help="CFG strength t_max (0 = off)")] = None,
    cfg_schedule: Annotated[Optional[str], Opt(help="linear (VAR ramp) or constant")] = None,
    top_k: Annotated[Optional[int], Opt(help="top-k (0 = off)")] = None,
    top_p: Annotated[Optional[float], Opt(help="top-p (0 = off)")] = None,
    temperature: Annotated[Optional[float], Opt(help="softmax temperature")] = None,
    batch_size: Annotated[int, Opt(help="generation batch")] = 100,
    device: Annotated[str, Opt(help="auto, cpu, cuda (generation and features)")] = "auto",
    out: Annotated[Optional[Path], Opt(help="result JSON (default RUN/eval.json, CKPT-eval.json, NPZ.eval.json)")] = None,
    bootstrap: Annotated[int, Opt(help="bootstrap resamples for an FID interval (0 = off; 100 is typical)")] = 0,
    extractor: Annotated[str, Opt(help="feature extractor: genorder-inception-fid, or genorder-tiny-random (tests)")] = INCEPTION,
    ref_n: Annotated[Optional[int], Opt(help="reference images from the test split (default all)")] = None,
    kid_subsets: Annotated[int, Opt(help="KID subsets")] = 100,
    cache_dir: Annotated[Optional[Path], Opt(help="reference feature cache (default $GENORDER_FID_CACHE or ~/.cache/genorder/fid)")] = None,
    image_size: ImageSizeOpt = None,
    threads: ThreadsOpt = None,
    class_acc: Annotated[bool, Opt("--class-acc/--no-class-acc", help="class-consistency accuracy (trains a small classifier once per dataset)")] = True,
    floor: Annotated[bool, Opt("--floor/--no-floor", help="the real-against-real FID at the same n (train images vs the reference)")] = True,
    classifier_cache: Annotated[Optional[Path], Opt(help="class-consistency classifier cache (default: CACHE_DIR/classifiers)")] = None,
) -> None:
    """Score samples (FID, KID, precision/recall; IS is n/a offline) or a tokenizer's reconstructions."""
    set_threads(threads)
    set_holdout(holdout)
    given = [x for x in (run, tokenizer if run is None else None, samples) if x is not None]
    if len(given) != 1:
        raise UserError("give exactly one of --run DIR, --tokenizer CKPT, --samples NPZ")
    if ref_batch is not None and samples is None:
        raise UserError("--ref-batch scores a --samples NPZ; give --samples")
    if n < 2:
        raise UserError(f"--n must be at least 2, got {n}")
    if bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {bootstrap}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if ref_n is not None and ref_n < 2:
        raise UserError(f"--ref-n must be at least 2, got {ref_n}")
    check_extractor(extractor)
    from genorder.metrics import small_n_warnings

    warnings = [] if ref_batch is not None else small_n_warnings(n, ref_n)  # --ref-batch: no KID, n does not apply
    for line in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    dev = resolve_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; use --device cpu (or auto)")
    common: dict[str, Any] = dict(extractor=extractor, device=dev, bootstrap=bootstrap, seed=seed, ref_n=ref_n,
                                  kid_subsets=kid_subsets, cache_dir=cache_dir, floor=floor,
                                  classifier_cache=classifier_cache)  # fmt: skip
    if run is not None:
        sampler = make_sampler({}, cfg=cfg, cfg_schedule=cfg_schedule, top_k=top_k, top_p=top_p, temperature=temperature)
        r = with_tokenizer(load_run(run, dev), None if tokenizer is None else str(tokenizer), dev)
        ds_spec = r.meta.get("dataset") or dataset or "fashion-mnist"  # an imported run may not know its set
        if dataset and dataset != ds_spec:
            raise UserError(f"{run} was trained on {ds_spec}; --dataset {dataset} would score it against another set")
        labels = class_balanced_labels(r.model.num_classes, n)
        t0 = time.perf_counter()
        images = to_uint8(generate_with_bar(r, labels, sampler, seed=seed, batch_size=batch_size, title=f"sample {r.order_name}"))
        t_sample = time.perf_counter() - t0
        m = _score(images, ds_spec, labels=labels if class_acc else None, **common)
        rec = record("samples", m, run=str(run), order=r.order_name, dataset=ds_spec, n=n, seed=seed,
                     tokenizer=str(tokenizer) if tokenizer is not None else "the run's copy",
                     sampler={"name": "standard", **sampler.config.model_dump()}, class_balanced=True,
                     device=str(dev), sampling_seconds=t_sample, scoring_seconds=m["seconds"])  # fmt: skip
        path = out or run / "eval.json"
        title = f"{run} · {r.order_name} · {n} samples, seed {seed}"
    elif samples is not None and ref_batch is not None:
        rec, path, title = _eval_ref_batch(samples, ref_batch, extractor, dev, batch_size, out)
    elif samples is not None:
        if not samples.is_file():
            raise UserError(f"--samples: {samples} not found")
        if not dataset:
            raise UserError("--samples needs --dataset (the set the samples should be compared with)")
        try:
            with np.load(samples, allow_pickle=False) as z:
                arr = z["images"]
                file_labels = z["labels"] if "labels" in z.files else None
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"--samples: cannot read array 'images' from {samples}: {err}") from None
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise UserError(f"--samples: 'images' must be uint8 (N, C, H, W), got {arr.dtype} {arr.shape}")
        images = torch.from_numpy(arr[:n].copy())
        labels = None if file_labels is None or not class_acc else torch.from_numpy(file_labels[:n].astype(np.int64))
        if labels is not None and len(labels) != len(images):
            raise UserError(f"--samples: {samples} holds {len(arr)} images but {len(file_labels)} labels")
        m = _score(images, dataset, labels=labels, **common)
        rec = record("samples-file", m, samples=str(samples), dataset=dataset, n=len(images), device=str(dev),
                     scoring_seconds=m["seconds"])  # fmt: skip
        path = out or samples.with_suffix(".eval.json")
        title = f"{samples} · {len(images)} images"
    else:
        from genorder.subsets import subset_of

        ds_spec = dataset or "fashion-mnist"
        tokenizer = tokenizer_stem(tokenizer)
        tok, name = load_tokenizer(tokenizer, dev)
        test = load_dataset(ds_spec, "test", image_size=image_size)
        if (test.channels, test.image_size) != (tok.channels, tok.image_size):
            raise UserError(f"tokenizer takes {tok.channels}x{tok.image_size}px images; {ds_spec} has "
                            f"{test.channels}x{test.image_size}px (--image-size resizes it)")  # fmt: skip
        originals, orig_labels = subset_of(test, n)  # seeded, class-balanced: not the first n of a sorted folder
        t0 = time.perf_counter()
        recon = reconstruct(tok, originals, dev, batch_size)
        t_rec = time.perf_counter() - t0
        m = _score(recon, ds_spec, **common, title="reconstruction features",
                         labels=orig_labels if class_acc else None)
        m["psnr"] = _psnr(recon, originals)
        rec = record("reconstruction", m, tokenizer=str(tokenizer), tokenizer_name=name, scales=list(tok.scales),
                     vocab_size=tok.codebook_size, dataset=ds_spec, n=len(originals), device=str(dev),
                     reconstruction_seconds=t_rec, scoring_seconds=m["seconds"])  # fmt: skip
        stem = tokenizer.with_suffix("") if tokenizer.suffix in (".json", ".safetensors") else tokenizer
        path = out or stem.with_name(stem.name + "-eval.json")
        title = f"{tokenizer} · reconstructions of {len(originals)} {ds_spec} test images"
    rec["warnings"] = warnings
    write_json(path, rec)
    print_metrics(title, rec)
    console.print(f"wrote {path}")
