"""Write the figures of README.md and docs/*.md from the results files in docs/results/.

Every number of a current result in the docs sits between markers

    <!-- genorder:begin NAME -->
    ... (written by this script: do not edit by hand)
    <!-- genorder:end NAME -->

and `RENDERERS[NAME]` writes it from the JSON results in docs/results/. To change a figure, change
(or regenerate) its results file and run this script; `tests/test_docs.py` fails when a doc differs
from what the script renders, so the docs cannot drift from the results.

    python scripts/render_docs.py           # rewrite the blocks in place
    python scripts/render_docs.py --check   # exit 1 and name the blocks that differ
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- genorder:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- genorder:end (?P=name) -->)", re.DOTALL)
ORDER_NAMES = {"next-scale": "next-scale", "maskgit": "MaskGIT", "raster": "raster"}


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _minus(text: str) -> str:
    return text.replace("-", "−")


def _signed(x: float, fmt: str = "{:+.1f}") -> str:
    return _minus(fmt.format(x))


def _ci(ci: list[float], fmt: str = "{:+.1f}") -> str:
    return f"[{_signed(ci[0], fmt)}, {_signed(ci[1], fmt)}]"


def _lr(x: float) -> str:
    """1.6e-2, 8e-3: a learning rate as the docs write it."""
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- compare ------------------------------------------------------------------------------------


def _fid_mean(o: dict) -> float:
    return o["fid_mean"] if "fid_mean" in o else statistics.fmean(o["fid"])


def _by_machine(run: dict) -> str:
    orders = run["orders"]
    names = [n for n in ("next-scale", "maskgit", "raster") if n in orders]
    acc = " / ".join(f"{orders[n]['class_acc_mean_pct']:.1f}" for n in names)
    fid = " / ".join(f"{_fid_mean(orders[n]):.1f}" for n in names)
    return f"class accuracy {acc}% and FID {fid}"


def determinism(_: str) -> str:
    d = load("compare-cpu")
    main, *others = d["runs"]
    text = (f"**Results are deterministic on one machine and may differ across CPU models.** Two runs on one "
            f"machine give a byte-identical `comparison.json` (`docs/RESULTS.md` §0.1), but torch's CPU kernels may "
            f"take other code paths on another CPU model, which changes the round-off, so the same command there "
            f"gives other figures. `genorder compare` with the defaults, "
            f"next-scale / MaskGIT / raster: on the {main['cpu_model']} of the figures here ({main['date']}, "
            f"commit {main['commit']}) {_by_machine(main)}")  # fmt: skip
    for o in others:
        text += f"; on an {o['cpu_model']} ({o['date']}, commit {o['commit']}) {_by_machine(o)}"
    return text + ". Check yours with `lscpu | grep 'Model name'` before comparing figures.\n"


def compare_table(_: str) -> str:
    run = load("compare-cpu")["runs"][0]
    rows = []
    for name in ("next-scale", "maskgit", "raster"):
        o = run["orders"][name]
        acc = " / ".join(f"{a['acc']:.0f} [{a['ci95'][0]:.0f}, {a['ci95'][1]:.0f}]" for a in o["class_acc_pct"])
        rows.append([
            ORDER_NAMES[name], o["params"], str(o["gen_steps"]), _lr(o["lr"]), f"{o['train_tflop']:.2f}",
            " / ".join(f"{x:.3f}" for x in o["heldout_loss"]),
            f"**{o['plateau_curve_pct']:.2f}%** ({o['plateau_seed_pct'][0]:.2f}% / {o['plateau_seed_pct'][1]:.2f}%)",
            acc, f"**{o['class_acc_mean_pct']:.1f}%**",
            f"{o['fid'][0]:.1f} / {o['fid'][1]:.1f} ({o['fid_over_floor']:.2f}×)", f"{o['kid_x1e3']:.1f}",
            f"{o['precision']:.2f}", f"{o['recall']:.2f}",
        ])  # fmt: skip
    header = ["order", "params", "gen steps", "lr", "train TFLOP", "held-out loss (seeds 0 / 1)",
              "last 20%: the order's curve (seeds 0 / 1)", "class acc, seed 0 / seed 1 [95% bootstrap]", "mean",
              "FID seeds 0 / 1 (mean × floor)", "KID ×10³", "precision", "recall"]  # fmt: skip
    return _table(header, rows)


def compare_points(_: str) -> str:
    run = load("compare-cpu")["runs"][0]
    rows = []
    for name in ("next-scale", "maskgit", "raster"):
        for seed, pt in run["orders"][name]["points"].items():
            rows.append([ORDER_NAMES[name], seed, " → ".join(f"{x:.3f}" for x in pt["heldout_loss"]),
                         ", ".join(f"{x:.0f}" for x in pt["class_acc_pct"])])  # fmt: skip
    return _table(["order", "seed", "held-out loss", "class acc"], rows)


def readme_compare(_: str) -> str:
    run = load("compare-cpu")["runs"][0]
    o = [run["orders"][n] for n in ("next-scale", "maskgit", "raster")]
    ratios = [x["fid_over_floor"] for x in o]
    fids = " / ".join(f"{_fid_mean(x):.1f}" for x in o)
    curves = " / ".join(f"{x['plateau_curve_pct']:.2f}%" for x in o)
    seeds = [s for x in o for s in x["plateau_seed_pct"]]
    return (f"- `genorder compare` (the first command above, defaults only; {run['date']}, idle 2-core "
            f"{run['cpu_model']} CPU, from empty caches): **{run['wall_clock'].split(' from')[0]}** including both "
            f"tokenizers, the classifier and the FID references.\n"
            f"  After 1000 steps per order (two seeds, d2 at width 64, 8×8 tokens), class accuracy of 100\n"
            f"  class-balanced samples: next-scale **{o[0]['class_acc_mean_pct']:.1f}%**, MaskGIT "
            f"**{o[1]['class_acc_mean_pct']:.1f}%**, raster **{o[2]['class_acc_mean_pct']:.1f}%**; FID "
            f"{fids} against a real-against-real floor of "
            f"{run['fid_floor']:.2f} at the same n ({min(ratios):.1f}–{max(ratios):.1f}×). Each order's held-out loss "
            f"has flattened: the full run ends {curves} below the run "
            f"of 80% of its length (mean over the two seeds; per seed "
            f"{min(seeds):.1f}–{max(seeds):.1f}%). "
            f"Every point, the goals, the LR sweep and why the schedule changed: `docs/RESULTS.md` §0.\n")  # fmt: skip


# -- ablation -----------------------------------------------------------------------------------


def _pm(m: dict, fmt: str) -> str:
    text = f"{fmt.format(m['mean'])} ± {fmt.replace('+', '').format(m['std'])}"
    if "ci95" in m:
        lo, hi = (fmt.replace("+", "").format(x) for x in m["ci95"])
        text += f" [{lo}, {hi}]"
    return text


def ablation_plateau(_: str) -> str:
    rows = []
    for r in load("ablation-cpu")["plateau"]:
        rows.append([str(r["row"]), r["title"], r["params"], "; ".join(f"{a:.3f} → {b:.3f}" for a, b in r["heldout_loss"]),
                     ", ".join(f"{x:.2f}%" for x in r["improvement_pct"]), f"**{r['curve_pct']:.2f}%**", r["flat"],
                     f"{r['at_2000_steps_pct']:.2f}%", ", ".join(map(str, r["train_seconds"]))])  # fmt: skip
    header = ["#", "row", "params", "held-out loss, 2000 → 2500-step run (seeds 0, 1, 2)", "improvement per seed",
              "the row's curve", "flat", "at 2000 steps", "training s per seed"]  # fmt: skip
    return _table(header, rows)


def ablation_table(_: str) -> str:
    rows = []
    for r in load("ablation-cpu")["rows"]:
        rows.append([
            str(r["row"]), r["title"], r["params"], str(r["gen_steps"]), str(r["train_steps"]), f"{r['cost']:.3f}",
            _pm(r["fid"], "{:.2f}"), _pm(r["class_acc_pct"], "{:.1f}"), _pm(r["kid_x1e3"], "{:.2f}"),
            _pm(r["precision"], "{:.3f}"), _pm(r["recall"], "{:.3f}"), _pm(r["delta_fid"], "{:+.2f}"), r["flat"],
            "—" if r["paper_fid"] is None else f"{r['paper_fid']:.2f}",
            "—" if r["paper_delta"] is None else f"{r['paper_delta']:+.2f}",
        ])  # fmt: skip
    header = ["#", "row", "params", "gen steps", "train steps", "cost", "FID", "class acc %", "KID×10³", "precision",
              "recall", "Δ FID", "flat", "paper FID", "paper Δ"]  # fmt: skip
    return _table(header, rows)


def ablation_reading(_: str) -> str:
    lines = []
    for it in load("ablation-cpu")["readings"]:
        paper = "" if it["paper_fid_delta"] is None else f"; paper: FID {it['paper_fid_delta']:+.2f}"
        f, a = it["fid"], it["acc_pts"]
        lines.append(f"- **{it['name']}** (row {it['base']} → {it['row']}, {it['what']}{paper}): FID {f['mean']:+.2f} "
                     f"[{f['ci95'][0]:+.2f}, {f['ci95'][1]:+.2f}] (n={f['n']}) — {it['fid_verdict']}; class accuracy "
                     f"{a['mean']:+.2f} pts [{a['ci95'][0]:+.2f}, {a['ci95'][1]:+.2f}] (n={a['n']}) — {it['acc_verdict']}.")  # fmt: skip
    return "\n".join(lines) + "\n"


def readme_ablation(_: str) -> str:
    d = load("ablation-cpu")
    by = {it["name"]: it for it in d["readings"]}
    curves = [r["curve_pct"] for r in d["plateau"]]

    def fid(name: str) -> str:
        return f"{_signed(by[name]['fid']['mean'])} {_ci(by[name]['fid']['ci95'])}"

    def acc(name: str) -> str:
        return f"{_signed(by[name]['acc_pts']['mean'])} {_ci(by[name]['acc_pts']['ci95'])}"

    return (f"- `docs/ABLATION.md`: the ablation table on the CPU, 10 rows × 3 seeds at 2500 steps per row in\n"
            f"  compare's regime (`{d['command'].replace(' --out runs/ablate-plateau', '')}`, {d['wall_clock']} and "
            f"{d['cpu_hours'].split(' (')[0]} CPU hours on the 2-core {d['cpu_model']}, {d['date']}), every row at its "
            f"plateau (held-out loss {min(curves):.1f}–{max(curves):.1f}% better over the last 20% of the compute). "
            f"AR → VAR reproduces the paper's sign in FID ({fid('AR → VAR')}); CFG ({acc('+ CFG')} points) and AdaLN "
            f"({acc('+ AdaLN')}) in class accuracy; top-k, attention norm and the scale-up are inconclusive at 3 seeds. "
            f"With row 6's recipe fixed, next-scale beats raster on the same tokens by "
            f"{by['next-scale against raster on multi-scale tokens']['acc_pts']['mean']:.1f} points of class accuracy "
            f"{_ci(by['next-scale against raster on multi-scale tokens']['acc_pts']['ci95'])}, MaskGIT beats raster by "
            f"{by['MaskGIT against raster']['acc_pts']['mean']:.1f} points but is worse in FID ({fid('MaskGIT against raster')}); "
            f"the multi-scale tokenizer alone is inconclusive.\n")  # fmt: skip


# -- scaling ------------------------------------------------------------------------------------


def scaling_points(_: str) -> str:
    rows = []
    for p in load("scaling-cpu")["points"]:
        a = p["class_acc_pct"]
        rows.append([p["order"], str(p["depth"]), str(p["width"]), f"{p['params']:,}", f"{p['steps']:,}", f"{p['images']:,}",
                     f"{p['train_tflop']:.3g}", f"{p['loss']:.3f}", f"{a['acc']:.1f}% [{a['ci95'][0]:.1f}, {a['ci95'][1]:.1f}]",
                     str(p["train_seconds"])])  # fmt: skip
    header = ["order", "d", "width", "params", "steps", "images", "training TFLOP", "test token loss", "class acc [95%]",
              "training s"]  # fmt: skip
    return _table(header, rows)


def scaling_fits(_: str) -> str:
    rows = [[f["order"], f["x"], f"{f['b']:.3f}", f"[{f['b_ci_t'][0]:.3f}, {f['b_ci_t'][1]:.3f}]",
             f"[{f['b_ci_boot'][0]:.3f}, {f['b_ci_boot'][1]:.3f}]", f"{f['r']:.3f}"] for f in load("scaling-cpu")["fits"]]  # fmt: skip
    return _table(["order", "X", "b", "95% (regression)", "95% (bootstrap)", "Pearson r"], rows)


def readme_scaling(_: str) -> str:
    d = load("scaling-cpu")
    by = {(f["order"], f["x"]): f for f in d["fits"]}
    b = {o: _minus(f"{by[(o, 'params')]['b']:.3f}") for o in ("next-scale", "raster", "maskgit")}
    return (f"- `docs/SCALING.md`: the scaling law per order. In compare's CPU regime (8×8 tokens, d1–d4 at\n"
            f"  20 tokens per parameter, `genorder scale --workers 2`, {d['date']}, the 2-core {d['cpu_model']}): loss "
            f"exponent against parameters next-scale {b['next-scale']} (r = {_minus(format(by[('next-scale', 'params')]['r'], '.3f'))}), "
            f"raster {b['raster']}, MaskGIT {b['maskgit']}; next-scale's is steeper than MaskGIT's against compute "
            f"(disjoint intervals) and not separated from raster's.\n")  # fmt: skip


def _profile_cell(summary: dict, key: str) -> str:
    if key not in summary:
        return ""
    v = summary[key]
    return f"{v['median']:.1f} ({', '.join(f'{r:.1f}' for r in v['runs'])})"


def profile_cpu(_: str) -> str:
    """RESULTS §0.5's two tables, from benchmarks/profile-cpu.json (`scripts/profile_cpu.py --summarize`)."""
    summary = json.loads((ROOT / "benchmarks" / "profile-cpu.json").read_text())["summary"]
    orders = list(dict.fromkeys(k.split("/")[1] for k in summary))
    train = [[ORDER_NAMES.get(o, o), "train ms/step", *(_profile_cell(summary, f"{lab}/{o}/train_ms_per_step")
                                                     for lab in ("before", "after-cold", "after-warm"))] for o in orders]  # fmt: skip
    sample = [[ORDER_NAMES.get(o, o), "sample ms/image", *(_profile_cell(summary, f"{lab}/{o}/sample_ms_per_image")
                                                        for lab in ("before", "after-categorical"))] for o in orders]  # fmt: skip
    return (_table(["order", "figure", "before", "after, cache empty (first epoch)", "after, batch cached"], train) + "\n"
            + _table(["order", "figure", "before", "after (inverse-CDF draws)"], sample))


def refactor_identity(_: str) -> str:
    """Issue 21's byte identity of the default main job, from refactor-identity.json."""
    r = load("refactor-identity")
    same = "the same file, byte for byte" if r["equal"] else f"different at {', '.join(r['differences'][:5])}"
    return (f"`{r['compared_command']}` at commit {r['old_commit']} (compare in the CLI) and at {r['new_commit']} "
            f"(compare as library code; its one added key, `{r['new_extra_key']}`, removed): {same}; sha256 "
            f"`{r['old_sha256']}` and `{r['new_sha256']}` ({r['date']}, {r['cpu_model']}; "
            "`python scripts/refactor_identity.py OLD/comparison.json NEW/comparison.json ...`).\n")


def stats_validation(_: str) -> str:
    """Issue 22's A/A and planted-effect checks on a CPU-regime run, from stats-validation-cpu.json."""
    r = load("stats-validation-cpu")
    aa, pl = r["aa"], r["planted"]
    rows = [[f"A/A, {m}", f"{v['covered']}/{aa['pairs']} pairs cover 0", f"{v['false_positive_rate']:.3f}",
             f"{aa['nominal_rate']:.2f} ± {aa['binomial_se']:.3f}"] for m, v in aa["metrics"].items()]  # fmt: skip
    for m in ("class_acc", "classifier_fd"):
        c = pl[m]
        d = c["diff"]
        rows.append([f"planted ({pl['a']} vs {pl['b']}), {m}", f"{d['estimate']:+.4g} [{d['lo']:+.4g}, {d['hi']:+.4g}]",
                     c["verdict"], f"MDD {c['mdd']:.3g}"])  # fmt: skip
    head = (f"Run {r['order']} ({r['dataset']}), {aa['seeds_per_arm']} seed sets of {aa['per_seed']} samples per arm "
            f"from a pool of {aa['pool']}; planted: {pl['seeds']} seeds x {pl['per_seed']} samples per arm "
            f"({r['date'][:10]}, {r['cpu_model']}, `{r['command'].split(' /')[0]} ...`).\n\n")
    return head + _table(["check", "result", "rate / verdict", "nominal / MDD"], rows)


RENDERERS: dict[str, Callable[[str], str]] = {
    "stats-validation": stats_validation,
    "refactor-identity": refactor_identity,
    "profile-cpu": profile_cpu,
    "determinism": determinism, "compare-table": compare_table, "compare-points": compare_points,
    "readme-compare": readme_compare, "ablation-plateau": ablation_plateau, "ablation-table": ablation_table,
    "ablation-reading": ablation_reading, "readme-ablation": readme_ablation, "scaling-points": scaling_points,
    "scaling-fits": scaling_fits, "readme-scaling": readme_scaling,
}  # fmt: skip


def render(text: str) -> str:
    """`text` with every marked block rewritten by its renderer (an unknown name is an error)."""

    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in RENDERERS:
            raise KeyError(f"no renderer for the block {name!r}; known: {', '.join(RENDERERS)}")
        return m.group(1) + RENDERERS[name](m.group("body")) + m.group(4)

    return BLOCK.sub(one, text)


def blocks(text: str) -> list[str]:
    return [m.group("name") for m in BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a doc differs from its rendering")
    args = ap.parse_args(argv)
    stale = []
    for path in DOCS:
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(path.relative_to(ROOT).as_posix())
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"docs differ from docs/results/ (run python scripts/render_docs.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    if stale:
        print(f"rendered {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
