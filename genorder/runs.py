"""Run directories: everything needed to rebuild, sample and compare a trained model.

    runs/<name>/
      model.safetensors + model.json   weights; meta: order, backbone, dataset, budget spent, params,
                                       and `identity` (what a resume must match, see `run_identity`)
      checkpoints/step-<N>/            the latest checkpoint set, committed as one unit (see
                                       `genorder.checkpoint.commit_set`): model.* and optim.* of
                                       step N plus manifest.json; the model.* above are copies of it
      tokenizer.safetensors + .json    a copy of the tokenizer the run was trained with (written
                                       once, when the run starts; never by a resume)
      log.jsonl                        training metrics every `log_every` steps
      samples.png                      class-conditional grid, one row per class
      summary.json                     what the budget bought (images, tokens, steps, seconds, FLOPs)
      .lock                            the PID of the writer holding the lock (`genorder.lock.RunLock`
                                       locks the directory itself; deleting this file changes nothing)
      .genorder.json                   the marker that genorder made this folder (`genorder.outdir`),
                                       written before anything else

`load_run(path)` is the one entry point for readers; `--resume` reads `checkpoints/` only. A run
has started once it has a committed set or `model.json` (`run_started`): a writer killed after
committing a set but before publishing its `model.*` (even the first one) is resumed from the set,
which carries the run's identity in its `model.json`, and the resume publishes it
(`sync_published`). A fresh start never deletes a committed set (`reset_run`).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genorder.checkpoint import (
    WriteFailed,
    atomic_write,
    clean_stale,
    commit_set,
    discard,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    verify_set,
)
from genorder.config import build_config
from genorder.data import MAX_CLASSES
from genorder.errors import UserError
from genorder.hashing import tensors_fingerprint
from genorder.model import BackboneConfig, GenModel, build_model
from genorder.order import Order
from genorder.registry import registry
from genorder.tokenizer import Tokenizer


def tokenizer_meta(name: str, tokenizer: Tokenizer) -> dict[str, Any]:
    return {"component": "tokenizer", "name": name, "config": tokenizer.config.model_dump(mode="json")}


def save_tokenizer(tokenizer: Tokenizer, name: str, path: str | Path, extra: dict | None = None) -> Path:
    return save_checkpoint(path, tokenizer.state_dict(), {**tokenizer_meta(name, tokenizer), **(extra or {})})


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> tuple[Tokenizer, str]:
    """Rebuild a tokenizer from its checkpoint (registry name + config in the JSON), eval mode."""
    state, meta = load_checkpoint(path)
    name, cfg = meta.get("name"), meta.get("config")
    if not name or cfg is None:
        raise UserError(f"{path}: not a genorder tokenizer checkpoint (no name/config in its JSON)")
    tok = registry("tokenizers").create(name, cfg)
    try:
        tok.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "state dict mismatch"
        raise UserError(f"{path}: the weights do not fit tokenizer {name!r} with its config ({first})") from None
    return tok.to(device).eval(), name


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """Content hash of a tokenizer's weights (`genorder.hashing.tensors_fingerprint`)."""
    return tensors_fingerprint(tokenizer.state_dict())


def copy_checkpoint(src: str | Path, dst_stem: Path) -> None:
    """Copy a checkpoint pair, each file atomically (a reader never sees half a copy)."""
    src = Path(src)
    stem = src.with_suffix("") if src.suffix in (".safetensors", ".json") else src
    for ext in (".safetensors", ".json"):
        source = stem.with_suffix(ext)
        atomic_write(dst_stem.with_suffix(ext), lambda tmp, s=source: shutil.copyfile(s, tmp))


@dataclass
class Run:
    path: Path
    order: Order
    order_name: str
    tokenizer: Tokenizer
    model: GenModel
    meta: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return self.meta.get("class_names") or [str(i) for i in range(self.model.num_classes)]


def run_meta(order_name: str, order: Order, backbone: BackboneConfig, model: GenModel, **extra: Any) -> dict[str, Any]:
    from genorder.model import count_params

    return {
        "component": "run",
        "order": {"name": order_name, "config": order.config.model_dump(mode="json")},
        "backbone": backbone.model_dump(mode="json"),
        "params": count_params(model),
        "num_classes": model.num_classes,
        **extra,
    }


def load_run(path: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild order, tokenizer and model from a run directory."""
    p = Path(path)
    if not (p / "model.json").is_file():
        raise UserError(f"{p}: not a run directory (no model.json); train one with `genorder train`")
    meta = read_meta(p / "model")
    if meta.get("component") != "run":
        raise UserError(f"{p}/model.json is not a genorder run")
    try:
        order_name, order_cfg = meta["order"]["name"], meta["order"]["config"]
        backbone, num_classes = dict(meta["backbone"]), meta["num_classes"]
        if not isinstance(order_name, str) or not isinstance(num_classes, int) or isinstance(num_classes, bool):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"{p}/model.json lacks or garbles a required key (order.name, order.config, backbone, "
            "num_classes); it was not written by `genorder train` or has been edited"
        ) from None
    if not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"{p}/model.json: num_classes {num_classes} is outside 1..{MAX_CLASSES}")
    tokenizer, _ = load_tokenizer(p / "tokenizer", device)
    recorded = ((meta.get("identity") or {}).get("tokenizer") or {}).get("hash")
    if recorded and tokenizer_hash(tokenizer) != recorded:
        raise UserError(
            f"{p}/tokenizer.safetensors is not the tokenizer this run was trained with "
            f"(hash {short_hash(tokenizer_hash(tokenizer))}, the run records {short_hash(recorded)}); "
            "restore the run's own tokenizer copy"
        )
    order = registry("orders").create(order_name, order_cfg)
    cfg = build_config(BackboneConfig, backbone, section=f"{p}/model.json backbone")
    try:
        model = build_model(order, tokenizer, cfg, num_classes)
    except (ValueError, RuntimeError, TypeError, AssertionError) as err:
        raise UserError(f"{p}/model.json describes a model that cannot be built: {err}") from None
    state, _ = load_checkpoint(p / "model")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "state dict mismatch"
        raise UserError(
            f"{p}: model.safetensors does not match the model model.json describes ({first})"
        ) from None
    return Run(p, order, order_name, tokenizer, model.to(device).eval(), meta)


def list_runs(root: str | Path) -> list[Path]:
    """`root` when it is a run, else the runs in its sub-folders, one or two levels down (a folder of
    runs, or `compare`'s ORDER/seedN layout); a run's own folders (checkpoints/, points/) are not
    searched."""
    root = Path(root)
    if (root / "model.json").is_file():
        return [root]
    found = []
    for child in sorted(p for p in root.glob("*") if p.is_dir()):
        if (child / "model.json").is_file():
            found.append(child)
        else:
            found += sorted(q.parent for q in child.glob("*/model.json"))
    return found


def run_label(path: str | Path, root: str | Path) -> str:
    """A run's name under `root` ("next-scale/seed0" in compare's layout; the folder name otherwise)."""
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = ""
    return rel if rel and rel != "." else path.name


def write_json(path: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=str)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


# -- run identity: what a resume must match ---------------------------------------------------


# TrainConfig fields a resume may change: they do not change what one step computes (the budget
# may be extended: the lr schedule then follows the new budget from the resume on, so only a
# resume with the same budget is bit-identical to an uninterrupted run).
RESUMABLE_TRAIN_FIELDS = ("budget", "device", "log_every", "checkpoint_every", "nonfinite_streak", "nonfinite_total",
                          "parallel")


def short_hash(digest: str) -> str:
    from genorder.hashing import short

    return short(digest)


def absolute_dataset_spec(spec: str) -> str:
    """`npz:rel/x.npz` -> `npz:/abs/rel/x.npz` when the argument names an existing path (so a run
    stored from one directory can be evaluated from another); other specs unchanged."""
    from genorder.data import parse_spec

    name, arg = parse_spec(spec)
    if arg and Path(arg).expanduser().exists():
        return f"{name}:{Path(arg).expanduser().resolve()}"
    return spec


def run_identity(
    order_name: str, order: Order, backbone: BackboneConfig, train: Any, tokenizer_name: str,
    tokenizer: Tokenizer, dataset_spec: str, dataset: Any,
) -> dict[str, Any]:
    """Everything that decides what the run's next step computes, for `identity_diff` on resume:
    tokenizer (name, config, content hash), order, backbone, the train config without
    `RESUMABLE_TRAIN_FIELDS`, and the dataset (content hash; its absolute spec for the record)."""
    from genorder.hashing import dataset_fingerprint

    train_d = {k: v for k, v in train.model_dump(mode="json").items() if k not in RESUMABLE_TRAIN_FIELDS}
    return {
        "tokenizer": {"name": tokenizer_name, "config": tokenizer.config.model_dump(mode="json"),
                      "hash": tokenizer_hash(tokenizer)},
        "order": {"name": order_name, "config": order.config.model_dump(mode="json")},
        "backbone": backbone.model_dump(mode="json"),
        "train": train_d,
        "dataset": {"spec": absolute_dataset_spec(dataset_spec), "hash": dataset_fingerprint(dataset),
                    "num_classes": dataset.num_classes},
    }  # fmt: skip


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


IDENTITY_INFORMATIVE = ("dataset.spec",)  # recorded, not compared: the same content may move


def identity_diff(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`field: run X, now Y` for every field that differs (hashes shortened)."""
    a, b = _flatten(recorded), _flatten(current)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in IDENTITY_INFORMATIVE or a.get(key) == b.get(key):
            continue
        show = [short_hash(v) if isinstance(v, str) and v.startswith("sha256:") else v for v in (a.get(key), b.get(key))]
        lines.append(f"{key}: the run has {show[0]!r}, this command gives {show[1]!r}")
    return lines


# -- the run's checkpoint sets ----------------------------------------------------------------

CHECKPOINTS = "checkpoints"
_SET_NAME = re.compile(r"^step-(\d+)$")


def half_made(set_dir: str | Path) -> bool:
    """A `step-N` folder with no manifest and no checkpoint file in it (nothing but temporaries):
    never a committed set (`commit_set` renames a folder into place only after its manifest), so it
    is ignored by readers and removed by the next writer (`clean_run`); it never blocks a resume."""
    d = Path(set_dir)
    try:
        names = [e.name for e in d.iterdir()]
    except OSError:
        return False
    return all(n.startswith(".") and n.endswith(".tmp") for n in names)


def committed_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every committed checkpoint set of a run, oldest first (`half_made`
    folders left out)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in root.iterdir()
             if d.is_dir() and (m := _SET_NAME.match(d.name)) and not half_made(d)]  # fmt: skip
    return sorted(found)


def run_started(run_dir: str | Path) -> bool:
    """The run has something to resume or protect: a `model.json` or a committed checkpoint set
    (a writer killed while publishing its first set leaves the set and no `model.json`)."""
    return (Path(run_dir) / "model.json").is_file() or bool(committed_checkpoints(run_dir))


def latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(directory, manifest) of the newest committed set, verified file by file; None when the run
    has none; UserError when it is damaged (an older set is never silently used instead)."""
    sets = committed_checkpoints(run_dir)
    if not sets:
        return None
    step, d = sets[-1]
    manifest = verify_set(d)
    if manifest.get("step") != step:
        raise UserError(f"checkpoint {d}: its manifest says step {manifest.get('step')}, its name step {step}")
    return d, manifest


def commit_run_checkpoint(
    run_dir: str | Path, step: int, parts: dict[str, tuple[dict[str, Any], dict[str, Any]]]
) -> Path:
    """Commit `parts` as `checkpoints/step-<step>`, drop older sets, then refresh the top-level
    `model.*` copies that readers (`load_run`, `read_meta(run/"model")`) use."""
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINTS
    try:
        d = commit_set(root, f"step-{step:09d}", parts, {"step": step})
    except WriteFailed as err:
        prev = committed_checkpoints(run_dir)
        kept = f"the last checkpoint, {prev[-1][1].name}, is intact" if prev else "no checkpoint had been written yet"
        raise WriteFailed(f"the checkpoint of step {step} was not saved ({err}); {kept}. Free some space, "
                          "then continue with --resume") from None  # fmt: skip
    for _, older in committed_checkpoints(run_dir):
        if older != d:
            discard(older)
    if "model" in parts:
        try:
            publish_model(run_dir, d)
        except WriteFailed as err:
            raise WriteFailed(f"the checkpoint of step {step} is saved in {d}, but its copy to the run's "
                              f"top level failed ({err}). Free some space; --resume publishes it") from None  # fmt: skip
    return d


def publish_model(run_dir: str | Path, set_dir: str | Path) -> None:
    """Copy a set's model.* to the run's top level (each file atomically; the weights first)."""
    copy_checkpoint(Path(set_dir) / "model", Path(run_dir) / "model")


def sync_published(run_dir: str | Path, set_dir: str | Path, manifest: dict[str, Any]) -> bool:
    """Make the run's top-level `model.*` copies of the verified set `set_dir` (`manifest` its
    manifest) when they are missing or differ: a writer killed while publishing leaves them so.
    The set's weights are checked first (a set with non-finite weights is never published).
    Returns True when it copied. Call it holding the run's lock."""
    from genorder.hashing import file_sha256

    run_dir, set_dir = Path(run_dir), Path(set_dir)
    if manifest.get("sharded"):  # a sharded (DCP) set holds shards, not model.*: the resume reads the shards
        return False
    files = manifest.get("files", {})
    same = all((run_dir / n).is_file() and file_sha256(run_dir / n) == files.get(n)
               for n in ("model.safetensors", "model.json"))  # fmt: skip
    if same:
        return False
    state, _ = load_checkpoint(set_dir / "model")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"checkpoint {set_dir} holds non-finite values ({bad[0]}, ...); it cannot be resumed")
    publish_model(run_dir, set_dir)
    return True


def clean_run(run_dir: str | Path) -> None:
    """Remove what killed writers left behind: temporaries in the run and in checkpoints/, and
    `half_made` set folders."""
    run_dir = Path(run_dir)
    clean_stale(run_dir)
    clean_stale(run_dir / CHECKPOINTS)
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and _SET_NAME.match(d.name) and half_made(d):
                shutil.rmtree(d, ignore_errors=True)


FRESH_RUN_STALE = ("log.jsonl", "summary.json", "samples.png")


def reset_run(run_dir: str | Path) -> None:
    """Prepare the run's own folder for a fresh start (the caller holds its lock and has checked
    it with `genorder.outdir.check_out` and `run_started`): mark it as a run, then remove what a
    run of ours killed before its first checkpoint left (log, summary, grid, temporaries). Nothing
    else is touched; a committed set is never removed (UserError: the caller should resume)."""
    from genorder.outdir import RUN, mark

    run_dir = Path(run_dir)
    if committed_checkpoints(run_dir):
        raise UserError(f"{run_dir} holds a committed checkpoint; pass --resume to continue it")
    mark(run_dir, RUN)
    clean_run(run_dir)
    for name in FRESH_RUN_STALE:
        (run_dir / name).unlink(missing_ok=True)


def discard_checkpoints(run_dir: str | Path) -> None:
    """Remove every committed set of a run (a caller that retrains a run of its own from scratch,
    e.g. `ablate` on a copy whose weights were left behind). Call it holding the run's lock or
    while no writer can run."""
    for _, d in committed_checkpoints(run_dir):
        discard(d)


def truncate_log(path: str | Path, last_step: int) -> None:
    """Keep the log lines up to and including `last_step` (a resume rewinds to its checkpoint);
    a torn last line is dropped. Written atomically."""
    p = Path(path)
    if not p.is_file():
        return
    kept = []
    for line in p.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= last_step:
            kept.append(line)
    text = "".join(line + "\n" for line in kept)
    atomic_write(p, lambda tmp: tmp.write_text(text))


def enclosing_run(path: str | Path) -> Path | None:
    """The run directory that `path` lies inside (a strict parent holding model.json or committed
    checkpoint sets), or None: a new run must not be written into another run's folders."""
    p = Path(path).expanduser().resolve()
    for parent in p.parents:
        try:
            if (parent / "model.json").is_file() or committed_checkpoints(parent):
                return parent
        except OSError:  # an unreadable folder above holds no run we could write into anyway
            continue
    return None
