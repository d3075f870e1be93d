"""`genorder new-order NAME`: the skeleton of a third-party order plugin, ready to install.

    files = write_order_package("zigzag", Path("."))     # ./genorder-zigzag/...

The package (docs/PLUGINS.md §1):
  genorder-NAME/pyproject.toml                    the `genorder` entry point NAME = "genorder_NAME"
  genorder-NAME/genorder_NAME/__init__.py         registers the order as NAME (`register_orders`)
  genorder-NAME/genorder_NAME/order.py            a working order: row-major next-token prediction
                                                  with a KV cache (the place to put your own order)
  genorder-NAME/tests/test_NAME.py                runs `genorder.testing`'s checks on it
  genorder-NAME/README.md

The order already passes `genorder check NAME` once installed (`pip install -e genorder-NAME`):
start from it and change `_order_of` (which cell each step generates) or the whole loop.
"""

from __future__ import annotations

import keyword
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from genorder.errors import UserError

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = Template('''[build-system]
requires = ["setuptools>=64", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A genorder plugin: the $name generation order."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["genorder"]

# The line that makes this a plugin: genorder loads every module listed in this group.
[project.entry-points.genorder]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
''')

INIT = Template('''"""$dist: registers the order `$name` (see order.py)."""

from genorder import hookimpl

from .order import $cls


@hookimpl
def register_orders(register):
    register("$name", $cls)


__all__ = ["$cls"]
''')

ORDER = Template('''"""The `$name` order: next-token prediction over a single-scale token map, one cell per step
in the order `_order_of` gives (row-major here: change it, or the whole loop, to make it yours).

Training: position 0 is the start token (class condition + a learned vector); position i > 0 is
fed token i - 1 of the order; position i predicts token i under token-causal attention.
Sampling: L steps through the backbone's static KV cache, or (kv_cache = false) recomputing the
prefix each step; both give the same tokens (`genorder check $name` verifies it).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from genorder import (
    ComponentConfig,
    Order,
    Stem,
    TokenLayout,
    TrainBatch,
    UserError,
    causal_groups,
    cfg_labels,
    double,
    inference,
    init_std,
    sample_step,
)


def _order_of(p: int) -> torch.Tensor:
    """(p*p,) int64: the row-major cell generated at each step (a permutation of range(p*p))."""
    return torch.arange(p * p, dtype=torch.long)


class ${cls}Stem(Stem):
    """n inputs at start = 0 give n + 1 vectors (the start token first); at start = i > 0, n."""

    no_decay = ("pos_start", "pos_embed")

    def __init__(self, length: int, vocab: int, width: int) -> None:
        super().__init__()
        self.length, self.width = length, width
        self.tok_embed = nn.Embedding(vocab, width)
        self.pos_start = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, length, width))  # (1, L, C): the step's position
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_start, std=init_std(self.width))
        nn.init.trunc_normal_(self.pos_embed, std=init_std(self.width))

    def forward(self, inputs: torch.Tensor, cond: torch.Tensor, start: int = 0) -> torch.Tensor:
        x_BnC = self.tok_embed(inputs) if inputs.shape[1] else None  # (B, n_in, C)
        if start == 0:
            sos_B1C = cond[:, None, :] + self.pos_start
            x_BnC = sos_B1C if x_BnC is None else torch.cat([sos_B1C, x_BnC], dim=1)
        n = x_BnC.shape[1]
        if start + n > self.length:
            raise ValueError(f"positions [{start}, {start + n}) exceed the length {self.length}")
        return x_BnC + self.pos_embed[:, start : start + n]


class $cls(Order):
    """The $name order (a row-major start: see the module docstring)."""

    class Config(ComponentConfig):
        kv_cache: bool = Field(True, description="sample with the static KV cache (off: recompute the prefix)")

    tokenizer_kind = "single-scale"
    kv_cache_option = "kv_cache"

    def check_tokenizer(self, tokenizer) -> None:
        if len(tokenizer.scales) != 1:
            raise UserError(f"$name needs a single-scale tokenizer; this one has scales {tuple(tokenizer.scales)}")

    def layout(self, tokenizer) -> TokenLayout:
        self.check_tokenizer(tokenizer)
        return TokenLayout(tuple(tokenizer.scales))

    def groups(self, layout: TokenLayout) -> torch.Tensor:
        return causal_groups(layout.length)  # (L,): position i sees positions <= i

    def num_steps(self, layout: TokenLayout) -> int:
        return layout.length

    def build_stem(self, tokenizer, layout: TokenLayout, width: int) -> ${cls}Stem:
        return ${cls}Stem(layout.length, tokenizer.codebook_size, width)

    def training_batch(self, tokens, tokenizer, generator=None) -> TrainBatch:
        layout = self.layout(tokenizer)
        perm_L = _order_of(layout.scales[0]).to(tokens[0].device)
        targets_BL = tokens[0][:, perm_L]  # position i predicts the token of step i
        levels_S = torch.zeros(layout.length, dtype=torch.long, device=perm_L.device)
        return TrainBatch(targets_BL[:, :-1], targets_BL, levels_S)

    @inference
    def generate(self, model, tokenizer, labels, sampler, generator, progress=None):
        layout = self.layout(tokenizer)
        L, B, dev = layout.length, labels.shape[0], labels.device
        lab = cfg_labels(labels, model.null_class, sampler)  # (B or 2B,)
        seq_BL = torch.zeros(B, L, dtype=torch.long, device=dev)  # in generation order
        cache = model.new_cache(lab.shape[0], max_len=L) if self.config.kv_cache else None
        x_in = torch.zeros(lab.shape[0], 0, dtype=torch.long, device=dev)  # step 0: the start token only
        for i in range(L):
            if cache is not None:
                logits = model(x_in, lab, start=i, cache=cache)  # (B2, 1, V)
            else:
                logits = model(double(seq_BL[:, :i], sampler), lab, start=0)[:, -1:]
            idx_B1, _ = sample_step(sampler, logits, B, i, L, generator)
            seq_BL[:, i : i + 1] = idx_B1
            x_in = double(idx_B1, sampler)
            if progress:
                progress(i + 1, L)
        out_BL = torch.empty_like(seq_BL)
        out_BL[:, _order_of(layout.scales[0]).to(dev)] = seq_BL  # back to row-major cells
        return [out_BL]
''')

TEST = Template('''"""`genorder check $name` under pytest: every contract of genorder.testing."""

from genorder.testing.contracts import run_checks


def test_${module}_passes_genorder_check():
    results = run_checks("$name")
    assert results, "the order is not registered: pip install -e ."
    failed = [f"{r.check}: {r.message}" for r in results if r.status == "failed"]
    assert not failed, failed
''')

README = Template('''# $dist

A [genorder](https://github.com/) plugin registering the generation order `$name`.

```bash
pip install -e .
genorder plugins            # lists $name
genorder check $name        # the contracts every order keeps
genorder train --order $name --dataset fashion-mnist --tokenizer vq-fmnist-cpu --steps 300
```

`$module/order.py` is a working row-major order: change `_order_of` (the cell of each step) or the
generation loop to make it yours; docs/PLUGINS.md of genorder explains every method.
''')


def package_names(name: str) -> dict[str, str]:
    """{"name", "module", "dist", "cls"} for an order NAME (lower-case letters, digits, hyphens)."""
    if not NAME_RE.match(name):
        raise UserError(
            f"order name {name!r}: use lower-case letters and digits, words joined by single hyphens "
            "(e.g. zigzag, hilbert-curve)"
        )
    module = "genorder_" + name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-"))
    if keyword.iskeyword(module) or not cls.isidentifier():
        raise UserError(f"order name {name!r} does not make a Python identifier")
    if cls[0].isdigit():
        cls = "Order" + cls
    return {"name": name, "module": module, "dist": f"genorder-{name}", "cls": cls}


def write_order_package(name: str, parent: str | Path) -> Path:
    """Write the package skeleton for order `name` into parent/genorder-NAME (see the module
    docstring) and return that folder. The folder must not exist yet; the files are written to a
    temporary folder first and moved into place, so nothing is half-written."""
    names = package_names(name)
    parent = Path(parent)
    target = parent / names["dist"]
    if target.exists():
        raise UserError(f"{target} already exists; remove it or choose another --out")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"--out {parent} is a file, not a folder")
    files = {
        "pyproject.toml": PYPROJECT,
        f"{names['module']}/__init__.py": INIT,
        f"{names['module']}/order.py": ORDER,
        f"tests/test_{names['module'].removeprefix('genorder_')}.py": TEST,
        "README.md": README,
    }
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=".new-order-") as tmp:
            staging = Path(tmp) / names["dist"]
            for rel, template in files.items():
                path = staging / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(template.substitute(names))
            shutil.move(str(staging), str(target))
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}") from None
    return target
