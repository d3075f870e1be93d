"""The jobs `genorder.experiments.compare` hands to an executor (`genorder.executors`).

Each is a module-level function of plain arguments (paths, names, dicts), so it can run in a
`spawn`ed worker, and each writes what it produces to disk before returning a small JSON-able
record. The split that lets the two cores of a small machine both work from the first second:

  classifier      the class-consistency CNN (content-keyed cache)       ~2.5 min on one CPU core
  fid-reference   Inception features of the reference and the floor     (cached)
  tokenizer:KEY   one tokenizer (content-keyed cache)                    no dependency
  train:ORDER:S   one order and seed, weights saved at each evaluation  needs its tokenizer
                  point under RUN/points/ (training never waits on the classifier)
  score:ORDER:S   every point: held-out loss, the paired design's       needs the run, the
                  samples scored (per sample, RUN/paired/), FID at the   classifier and references
                  points asked for
  classifier-floor  the classifier FD's floor at seeds x final_n          needs the classifier
  paired:ORDER    one order's pooled classifier FD / precision-recall,   needs its score jobs
                  the per-seed FD's bootstrap replicates

Nothing here prints: the main process reports each job as it ends.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

POINTS = "points"  # RUN/points/step-NNNNNNN.{safetensors,json}: the weights at each evaluation point


def tokenizer_job(spec: str | None, order_name: str, order_opts: dict, dataset: str, image_size: int | None,
                  device: str, steps: int, minutes: float | None, train_opts: dict, tok_opts: dict) -> dict:  # fmt: skip
    """Resolve (train or reuse from the content-keyed cache) the tokenizer of `order_name`; returns
    {"stem": its checkpoint stem, "reused": whether the cache held it, "tensors": its content hash,
    "psnr", "steps", "scales", "vocab_size"}."""
    from genorder.data import load_dataset
    from genorder.hashing import tensors_fingerprint
    from genorder.registry import registry
    from genorder.training_run import _resolve_tokenizer as resolve_tokenizer

    order = registry("orders").create(order_name, order_opts)
    ds = load_dataset(dataset, "train", image_size=image_size)
    t0 = time.time_ns()
    tok, stem = resolve_tokenizer(spec, order, dataset, ds, torch.device(device), steps, minutes,
                                  train_opts=train_opts, tokenizer_opts=tok_opts, quiet=True)  # fmt: skip
    reused = stem.with_suffix(".safetensors").stat().st_mtime_ns < t0
    cache = stem.parent / "cache.json"
    rec = json.loads(cache.read_text()) if cache.is_file() else {}
    return {"stem": str(stem), "reused": reused, "tensors": tensors_fingerprint(tok.state_dict()),
            "psnr": rec.get("metrics", {}).get("psnr"), "steps": rec.get("metrics", {}).get("steps"),
            "scales": list(tok.scales), "vocab_size": tok.codebook_size}  # fmt: skip


def classifier_job(dataset: str, device: str, cache_root: str, image_size: int | None = None) -> dict:
    """Train (or reuse) the class-consistency classifier at the size the runs train at; returns its
    info without the model."""
    from genorder.classifier import load_or_train_classifier

    _, info = load_or_train_classifier(dataset, device=device, cache_root=cache_root, image_size=image_size)
    return info


def fid_reference_job(dataset: str, n: int, ref_n: int, extractor: str, device: str, fid_cache: str | None,
                      image_size: int | None = None) -> dict:  # fmt: skip
    """The reference features (cached on disk) and the real-against-real floor at n, both of the
    images at the size the runs train at."""
    from genorder import metrics

    dev = torch.device(device)
    ext = metrics.make_extractor(extractor, dev)
    floor = metrics.fid_floor(dataset, n, ref_n=ref_n, extractor=extractor, device=dev, cache_dir=fid_cache, module=ext,
                              image_size=image_size)  # fmt: skip
    metrics.reference_features(dataset, "test", ref_n, extractor, dev, fid_cache, module=ext, image_size=image_size)
    return floor


class PointSaver:
    """`on_step` hook: the weights at fractions `ends` of the budget (default k/points, k = 1..points),
    saved under RUN/points/step-NNNNNNN.

    With `anneal` (the wsd schedule), a point below 1 is the end of a run of that length: at its
    fork (`genorder.cooldown.fork_at`) the hook runs that run's cool-down as a branch and saves the
    branch's weights, then training goes on from the trunk. The last point is the trunk's own end.
    Without it, a point is the running weights at that fraction. On a resumed run, points whose
    fork lies before the resume are not taken again (their files are kept from before)."""

    def __init__(self, run_dir: Path, points: int = 0, anneal: bool = False, ends: list[float] | None = None) -> None:
        self.dir = run_dir / POINTS
        self.ends = sorted(ends) if ends is not None else [k / points for k in range(1, points + 1)]
        self.anneal = anneal
        self.saved: list[dict] = []
        self.timings: list[dict] = []
        self.overhead = 0.0  # seconds spent saving, taken out of the training clock
        self.branch_seconds = 0.0  # seconds spent in cool-down branches (not the trunk's)
        self.started = False

    def _at(self, trainer, end: float) -> float:
        from genorder.cooldown import fork_at

        return fork_at(trainer.cfg, end) if self.anneal and end < 1 - 1e-9 else end

    def _due(self, trainer) -> float | None:
        if not self.ends:
            return None
        end = self.ends[0]
        return end if trainer.tracker.fraction() + 1e-9 >= self._at(trainer, end) else None

    def _reload(self, count: int) -> None:
        """The records of the first `count` points, read from their files (a resumed run)."""
        from genorder.checkpoint import read_meta

        files = sorted(self.dir.glob("step-*.json"))[:count]
        if len(files) < count:
            raise RuntimeError(f"{self.dir}: {count} evaluation points were taken before the resume, {len(files)} are on disk")
        for f in files:
            m = read_meta(f.with_suffix(""))
            self.saved.append({"step": m["step"], "images": m["images"], "train_flops": m["train_flops"]})
            self.timings.append({"step": m["step"], "train_seconds": m.get("train_seconds", 0.0)})
            self.branch_seconds += m.get("branch_seconds", 0.0)

    def __call__(self, trainer, metrics: dict) -> None:
        from genorder.checkpoint import save_checkpoint

        if not self.started:  # the fraction before this step: a resumed run starts past 0
            self.started = True
            steps = trainer.tracker.spent.steps
            before = trainer.tracker.fraction() * (steps - 1) / steps if steps else 0.0
            kept = [e for e in self.ends if self._at(trainer, e) + 1e-9 >= before]
            taken = len(self.ends) - len(kept)
            self.ends = kept
            if taken:  # a resumed run: the points taken before the interruption are on disk
                self._reload(taken)
        end = self._due(trainer)
        while end is not None:
            self.ends.pop(0)
            t0 = time.perf_counter()
            trunk_s = trainer.tracker.spent.seconds - self.overhead - self.branch_seconds
            if self.anneal and end < 1 - 1e-9:
                from genorder.cooldown import anneal_branch

                state, s = anneal_branch(trainer, end)
                branch_s = time.perf_counter() - t0
                self.branch_seconds += branch_s
            else:
                state = {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}
                s, branch_s = trainer.tracker.spent.as_dict(), 0.0
            rec = {"step": s["steps"], "images": s["images"], "train_flops": s["flops"]}
            t1 = time.perf_counter()
            trunk_total = trunk_s + branch_s
            save_checkpoint(self.dir / f"step-{s['steps']:07d}", state,
                            {"component": "compare-point", **rec, "train_seconds": trunk_total,
                             "branch_seconds": branch_s})  # fmt: skip
            self.saved.append(rec)
            self.timings.append({"step": s["steps"], "train_seconds": trunk_total})
            self.overhead += time.perf_counter() - t1
            end = self._due(trainer)


def _read(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("key") == key else None


OWN = "compare_job.json"  # RUN/compare_job.json: {"key": ...}, written once training has begun


def _is_own(run_dir: Path) -> bool:
    """Whether `run_dir` is a run this module started (its marker or its finished record is there)."""
    return (run_dir / OWN).is_file() or (run_dir / "compare_run.json").is_file()


def _prepare_run_dir(run_dir: Path, key: str) -> bool:
    """Make `run_dir` ready for the run of `key`; True when it holds that run's checkpoint to resume.

    An interrupted run of the same key continues from its last checkpoint; compare's own run of
    another key (or one stopped before its first checkpoint) is removed; a folder compare did not
    write is never deleted: it is refused."""
    from genorder.errors import UserError
    from genorder.runs import latest_checkpoint

    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return False
    if not run_dir.is_dir() or not _is_own(run_dir):
        raise UserError(f"{run_dir} exists and is not a run `compare` started; move it away or choose another --out")
    own = _read(run_dir / OWN, key) or _read(run_dir / "compare_run.json", key)
    if own is not None and (run_dir / "model.json").is_file() and latest_checkpoint(run_dir) is not None:
        return True
    shutil.rmtree(run_dir)
    return False


class _Marked:
    """`on_step` hook: writes RUN/compare_job.json (the run's key) at the first step, then calls `hook`."""

    def __init__(self, run_dir: Path, key: str, hook) -> None:
        self.run_dir, self.key, self.hook, self.marked = run_dir, key, hook, False

    def __call__(self, trainer, metrics: dict) -> None:
        if not self.marked:
            from genorder.runs import write_json

            write_json(self.run_dir / OWN, {"key": self.key})
            self.marked = True
        if self.hook is not None:
            self.hook(trainer, metrics)


def train_job(job: dict) -> dict:
    """Train one order and seed (or reuse the finished run whose record has the same key).

    job: name, seed, lr, budget, run_dir, key_base, tokenizer (the tokenizer job's record; the run's
    key is key_base with the tokenizer's content hash), dataset, depth, batch_size,
    sections, sampler_opts, per_class, image_size, device, points (0: no points, score the
    held-out loss on the LR-sweep split instead), heldout_n, schedule (lin0 or wsd; under wsd every
    point but the last is the end of its own cool-down branch).
    Returns {"result", "timings", "reused", "key"}."""
    from genorder.checkpoint import read_meta
    from genorder.hashing import config_fingerprint
    from genorder.runs import write_json
    from genorder.training_run import train_run

    run_dir = Path(job["run_dir"])
    key = config_fingerprint({**job["key_base"], "tokenizer": job["tokenizer"]["tensors"]})
    rec_path = run_dir / "compare_run.json"
    rec = _read(rec_path, key)
    if rec is not None and (run_dir / "model.json").is_file() and read_meta(run_dir / "model").get("final"):
        return {"result": rec["result"], "timings": rec["timings"], "reused": True, "key": key}
    resume = _prepare_run_dir(run_dir, key)
    schedule = job.get("schedule", "lin0")
    hook = PointSaver(run_dir, job["points"], anneal=schedule == "wsd") if job["points"] else None
    summary = train_run(
        job["name"], run_dir, dataset_spec=job["dataset"], tokenizer_spec=job["tokenizer"]["stem"], depth=job["depth"],
        budget=job["budget"], sections=job["sections"],
        train_opts={"batch_size": job["batch_size"], "lr": job["lr"], "seed": job["seed"], "device": job["device"],
                    "schedule": schedule, "cooldown": job.get("cooldown", 0.2)},
        sampler_opts=job["sampler_opts"], samples_per_class=job["per_class"], on_step=_Marked(run_dir, key, hook),
        image_size=job["image_size"], quiet=True, resume=resume,
    )  # fmt: skip
    if hook is not None and not hook.started:  # resumed after its last step: every point is on disk
        hook._reload(len(hook.ends))
        hook.ends = []
    meta = read_meta(run_dir / "model")
    s = meta["spent"]
    result = {"order": job["name"], "seed": job["seed"], "lr": job["lr"], "params": meta["params"], "steps": s["steps"],
              "images": s["images"], "tokens": s["tokens"], "train_flops": s["flops"],
              "final_train_loss": summary["last"].get("loss"), "stopped_by": summary["stopped_by"]}  # fmt: skip
    timings: dict[str, Any] = {"train_seconds": hook.timings[-1]["train_seconds"] if hook and hook.timings else s["seconds"]}
    if hook is not None:
        result["saved_points"] = hook.saved
        timings["points"] = hook.timings
        timings["branch_seconds"] = hook.branch_seconds
    else:
        result["heldout_loss"] = _heldout_on_tune_split(run_dir, job)
    write_json(rec_path, {"key": key, "result": result, "timings": timings})
    return {"result": result, "timings": timings, "reused": False, "key": key}


def _test_split(job: dict):
    from genorder.data import load_dataset

    train = load_dataset(job["dataset"], "train", image_size=job["image_size"])
    return load_dataset(job["dataset"], "test", image_size=train.image_size, channels=train.channels)


def heldout_subset(job: dict, which: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images (m, C, H, W) uint8 and labels (m,) of a held-out loss: `which` 0 is the one
    compare reports, 1 the LR sweep's; two seeded class-balanced subsets of `heldout_n`, disjoint
    when the test split allows it (`genorder.subsets.disjoint_subsets`; never "the first n": an
    image folder is read class by class)."""
    from genorder.subsets import disjoint_subsets

    test = _test_split(job)
    idx = disjoint_subsets(test.labels, job["heldout_n"])[which]
    return test.images[idx], test.labels[idx]


def _heldout_on_tune_split(run_dir: Path, job: dict) -> float:
    """Held-out loss of the final weights on the LR sweep's split (`heldout_subset(job, 1)`, disjoint
    from the reported one when the test split allows it)."""
    from genorder.heldout import heldout_loss
    from genorder.runs import load_run

    images, labels = heldout_subset(job, 1)
    r = load_run(run_dir, torch.device(job["device"]))
    return heldout_loss(r.order, r.tokenizer, r.model, images, labels)


def score_job(job: dict, trained: dict, classifier_info: dict) -> dict:
    """Score every saved point of one run: held-out loss on `heldout_subset(job, 0)`; the
    paired design (`compare_paired`: the same labels and per-sample seeds for every order and seed)
    of `n` samples, `final_n` at the last point, scored by the classifier (per-sample results
    written to RUN/paired/, with the features at the last point); and FID / KID /
    precision-recall on `fid_n` class-balanced samples (seed 0) at every point (`fid_points`
    "all") or at the last one ("last"). Reuses the record whose key (the training key plus
    everything the scoring depends on) matches.

    Returns {"points": [...], "timings": [...], "reused"}."""
    from genorder import metrics
    from genorder.checkpoint import load_checkpoint
    from genorder.classifier import load_or_train_classifier
    from genorder.experiments import compare_paired as cp
    from genorder.heldout import heldout_loss
    from genorder.quality import CheckpointProbe, PairedProbe
    from genorder.runs import load_run, write_json
    from genorder.training_run import make_sampler

    run_dir = Path(job["run_dir"])
    key = json.dumps({"train": trained["key"], "score": job["score_key"], "classifier": [classifier_info["dataset_hash"], classifier_info["test_accuracy"]]}, sort_keys=True)
    rec_path = run_dir / "compare_score.json"
    rec = _read(rec_path, key)
    saved = trained["result"]["saved_points"]
    have_files = all(cp.paired_path(run_dir, sp["step"]).is_file() for sp in saved)
    if rec is not None and trained["reused"] and have_files:  # a retrained run is rescored
        return {"points": rec["points"], "timings": rec["timings"], "reused": True}
    dev = torch.device(job["device"])
    classifier, _ = load_or_train_classifier(job["dataset"], device=dev, cache_root=job["classifier_cache"],
                                             image_size=job["image_size"])  # fmt: skip
    real_MD = ext = None
    if job["extractor"] is not None:
        ext = metrics.make_extractor(job["extractor"], dev)
        _, real_MD = metrics.reference_features(job["dataset"], "test", job["ref_n"], job["extractor"], dev,
                                                job["fid_cache"], module=ext, image_size=job["image_size"])  # fmt: skip
    held_images, held_labels = heldout_subset(job, 0)
    sampler = make_sampler(job["sections"], **job["sampler_opts"])
    with_fid = CheckpointProbe(classifier, real_MD, ext, held_images, held_labels, sampler, n=job["fid_n"], seed=0)
    r = load_run(run_dir, dev)
    points, timings = [], []
    for i, sp in enumerate(saved):
        state, _ = load_checkpoint(run_dir / POINTS / f"step-{sp['step']:07d}")
        r.model.load_state_dict(state)
        last = i == len(saved) - 1
        t0 = time.perf_counter()
        if job["extractor"] is not None and (job["fid_points"] == "all" or last):
            fid_point, _ = with_fid(r.order, r.tokenizer, r.model)
            point = {k: v for k, v in fid_point.items() if k != "class_acc"}  # class accuracy: the paired design's
        else:
            was = r.model.training
            r.model.eval()
            point = {"heldout_loss": heldout_loss(r.order, r.tokenizer, r.model, held_images, held_labels)}
            r.model.train(was)
        heldout_fid_s = time.perf_counter() - t0
        probe = PairedProbe(classifier, None, None, sampler, n=job["final_n"] if last else job["n"], seed=cp.DESIGN_SEED,
                            block=cp.BLOCK)  # fmt: skip
        paired = probe(r.order, r.tokenizer, r.model)
        cp.save_paired(cp.paired_path(run_dir, sp["step"]), paired, with_features=last)
        points.append({**sp, **point, **cp.point_summary(paired, r.model.num_classes)})
        timings.append({"step": sp["step"], "sample_seconds": paired.seconds["sample"], "score_seconds": paired.seconds["score"],
                        "heldout_fid_seconds": heldout_fid_s})  # fmt: skip
    write_json(rec_path, {"key": key, "points": points, "timings": timings})
    return {"points": points, "timings": timings, "reused": False}


def classifier_floor_job(job: dict, n: int) -> dict:
    """The classifier FD's real-against-real floor at the pooled n (`n` = seeds x final_n): a seeded
    class-balanced n of the train images against the test split, in the classifier's features. Runs beside the
    training (it needs the classifier only)."""
    from genorder.classifier import load_or_train_classifier
    from genorder.classifier_fd import classifier_floor
    from genorder.data import load_dataset
    from genorder.experiments import compare_paired as cp

    classifier, _ = load_or_train_classifier(job["dataset"], device=torch.device(job["device"]), cache_root=job["classifier_cache"],
                                             image_size=job["image_size"])  # fmt: skip
    train = load_dataset(job["dataset"], "train", image_size=job["image_size"])
    return classifier_floor(classifier, train.images, cp.reference(classifier, _test_split(job).images), n, labels=train.labels)


def order_stats_job(job: dict, run_dirs: list[str], scored: list[dict], reps: int) -> dict:
    """One order's last point over its seeds (`run_dirs`, the score jobs' records `scored` in the
    same order): `compare_paired.order_statistics` of the features the score jobs wrote."""
    from genorder.classifier import load_or_train_classifier
    from genorder.experiments import compare_paired as cp

    classifier, _ = load_or_train_classifier(job["dataset"], device=torch.device(job["device"]), cache_root=job["classifier_cache"],
                                             image_size=job["image_size"])  # fmt: skip
    feats = [cp.load_paired(cp.paired_path(Path(d), rec["points"][-1]["step"]))["features"] for d, rec in zip(run_dirs, scored, strict=True)]
    return cp.order_statistics(feats, cp.reference(classifier, _test_split(job).images), reps=reps)
