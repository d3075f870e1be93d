"""docs/PLUGINS.md §3's code blocks are a complete, runnable plugin module: extracted, registered
and checked with `genorder check` (issue 25, item 9)."""

from __future__ import annotations

import re
import types
from pathlib import Path

from plugin_kit import failed_checks, register_plugin

DOC = Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md"


def section_code(text: str, start: str, end: str) -> str:
    body = text[text.index(start) : text.index(end)]
    return "\n".join(re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL))


def test_section_3_snippets_run_and_pass_genorder_check(monkeypatch):
    code = section_code(DOC.read_text(), "## 3. An order", "## 4. Declared capabilities")
    assert "def generate" in code and "levels_S" in code and "x_in = double(" in code  # what the issue found missing
    module = types.ModuleType("plugins_doc_spiral")
    exec(compile(code, f"{DOC}#section-3", "exec"), module.__dict__)  # noqa: S102 -- the documentation is the code under test
    register_plugin(monkeypatch, module, "plugins_doc_spiral")
    from genorder.registry import registry

    assert registry("orders").entries["doc-spiral"].plugin == "plugins_doc_spiral"
    assert failed_checks("doc-spiral") == []
    # the stem's contract as the prose states it: n inputs at start=0 give n + 1 vectors
    import torch

    stem = module.SpiralStem(module.spiral_order(3), vocab=8, width=4)
    cond = torch.zeros(2, 4)
    assert stem(torch.zeros(2, 3, dtype=torch.long), cond, start=0).shape == (2, 4, 4)
    assert stem(torch.zeros(2, 1, dtype=torch.long), cond, start=5).shape == (2, 1, 4)
    assert module.spiral_order(3).tolist() == [4, 5, 8, 7, 6, 3, 0, 1, 2]
