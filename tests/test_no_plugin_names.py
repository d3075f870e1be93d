"""The CLI and the bench harness know no plugin: no import of a plugin module (`genorder_plugins`
or any installed plugin's module) and no registered order or tokenizer name in their code or help
texts. What they need is a capability a component declares (`Order.tokenizer_kind`,
`Order.kv_cache_option`, `Order.uses_kv_cache`, `Order.reference_baseline`, `Tokenizer.default_for`,
`TrainableTokenizer`).

cli/cmd_compare.py takes its default orders from the registry (the built-in ones) and its
tokenizers from the presets' declarations; cli/cmd_ablate.py runs the VAR paper's ablation table, whose rows name
their orders in genorder/ablation.py, and is checked like the rest."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from genorder.registry import plugin_distributions, registry

ROOT = Path(__file__).resolve().parents[1]
EXCLUDED: set[str] = set()
FILES = sorted(p for p in (ROOT / "cli").glob("*.py") if p.name not in EXCLUDED) + [ROOT / "genorder" / "bench.py"]


def plugin_modules() -> set[str]:
    return {"genorder_plugins"} | {module.split(".")[0] for _, module, _ in plugin_distributions()} - {"genorder"}


def component_names() -> set[str]:
    return set(registry("orders").names()) | set(registry("tokenizers").names())


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of the module, classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _strings_and_imports(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """String constants (the bench's docstrings left out: they explain the cost model with the
    built-in orders as examples; the CLI's are help texts and are kept) and imported modules."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree) if path.parent.name == "genorder" else set()
    strings, imports = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            strings.append((node.lineno, node.value))
        elif isinstance(node, ast.Import):
            imports += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.append((node.lineno, node.module))
    return strings, imports


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_plugin_import(path):
    _, imports = _strings_and_imports(path)
    mods = plugin_modules()
    bad = [(line, m) for line, m in imports if m.split(".")[0] in mods]
    assert not bad, f"{path.name} imports plugin modules: {bad}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_plugin_name(path):
    strings, _ = _strings_and_imports(path)
    names = component_names()
    assert {"raster", "next-scale", "maskgit", "msvq-fmnist", "vq-tiny"} <= names
    bad = []
    for line, text in strings:
        for name in names:
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, flags=re.IGNORECASE):
                bad.append((line, name, text[:80]))
    assert not bad, f"{path.name} names plugins: {bad}"


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text('from genorder_plugins.vqvae import PRESETS\nDEFAULT = "msvq-fmnist"\n')
    strings, imports = _strings_and_imports(bad)
    assert imports[0][1].split(".")[0] in plugin_modules()
    assert any("msvq-fmnist" in s for _, s in strings)
