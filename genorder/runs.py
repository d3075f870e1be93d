"""Run directories: everything needed to rebuild, sample and compare a trained model.

    runs/<name>/
      model.safetensors + model.json   weights; meta: order, backbone, dataset, budget spent, params
      optim.safetensors + optim.json   optimizer state (for --resume)
      tokenizer.safetensors + .json    a copy of the tokenizer the run was trained with
      log.jsonl                        training metrics every `log_every` steps
      samples.png                      class-conditional grid, one row per class
      summary.json                     what the budget bought (images, tokens, steps, seconds, FLOPs)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genorder.checkpoint import load_checkpoint, read_meta, save_checkpoint
from genorder.errors import UserError
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
    tok.load_state_dict(state)
    return tok.to(device).eval(), name


def copy_checkpoint(src: str | Path, dst_stem: Path) -> None:
    src = Path(src)
    stem = src.with_suffix("") if src.suffix in (".safetensors", ".json") else src
    for ext in (".safetensors", ".json"):
        shutil.copyfile(stem.with_suffix(ext), dst_stem.with_suffix(ext))


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
    tokenizer, _ = load_tokenizer(p / "tokenizer", device)
    order_name = meta["order"]["name"]
    order = registry("orders").create(order_name, meta["order"]["config"])
    cfg = BackboneConfig(**meta["backbone"])
    model = build_model(order, tokenizer, cfg, meta["num_classes"])
    state, _ = load_checkpoint(p / "model")
    model.load_state_dict(state)
    return Run(p, order, order_name, tokenizer, model.to(device).eval(), meta)


def list_runs(root: str | Path) -> list[Path]:
    root = Path(root)
    if (root / "model.json").is_file():
        return [root]
    return sorted(q.parent for q in root.glob("*/model.json"))


def write_json(path: str | Path, obj: Any) -> None:
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(p)
