"""Fuzz harness (issue 24): seeded random configs, `--set` values, data files and `.pth` files through
every command, in this process (Typer's CliRunner).

Each case is drawn from its seed alone (`random.Random(seed)`), so a failure names the seed that
reproduces it: `GENORDER_FUZZ_SEEDS=1234 pytest tests/test_fuzz.py -k seeds`. A case asserts:
exit 0 or 2 (2 with an `error:` line), never a traceback, and no file written, changed or deleted
outside the paths the command was told to write (its --out / --json / --npz), GENORDER_CACHE_DIR
(redirected into the lab) and the content-keyed caches under ./runs (CACHES).

Sizes: `test_fuzz_ci` runs CI_CASES (40) seeded cases (seeds 0-39): 36-48 s for the cases plus ~16 s
of setup, measured 2026-12-04 with `pytest tests/test_fuzz.py -m "not slow"` on 2 shared cores of an
AMD EPYC (lscpu), under load; deterministic cases, but timings differ across CPU models and load. The `slow`
run `test_fuzz_long` (opt-in: `pytest tests/test_fuzz.py -m long`) runs GENORDER_FUZZ_CASES cases (default 1,000),
logging one JSON line per case to GENORDER_FUZZ_REPORT as it goes.
Work sizes stay tiny (depth 1, <= 2 steps, 16 px), and values that are valid but huge (a billion
samples) are not drawn: they are slow, not wrong. `compare`, `ablate` and `scale` are fuzzed at
their option parsing and validation only (a valid run of them is minutes long).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from robust_fixtures import TRAIN, invoke, make_lab, snapshot, traceback_of

# the toolkit's documented content-keyed caches under ./runs (a tokenizer trained for a preset, the
# class-consistency classifier that `edit` and `eval` train once per dataset): writes there are allowed
CACHES = ("tokenizers", "classifiers")
CI_CASES = 40
LONG_CASES = int(os.environ.get("GENORDER_FUZZ_CASES", "1000"))

SECTIONS = ("order", "backbone", "train", "budget", "sampler", "tokenizer", "bogus")
KEYS = {
    "backbone": ("depth", "width", "heads", "mlp_ratio", "adaln", "shared_adaln", "qk_norm", "drop_path",
                 "init_head", "init_adaln", "init_adaln_gamma", "attn_backend"),
    "train": ("batch_size", "base_lr", "lr", "betas", "weight_decay", "grad_clip", "warmup", "flat", "final_lr",
              "schedule", "cooldown", "label_drop", "precision", "seed", "log_every", "checkpoint_every",
              "nonfinite_streak", "nonfinite_total", "budget.steps", "budget.images", "device"),
    "budget": ("steps", "images", "minutes", "flops"),
    "sampler": ("cfg", "cfg_schedule", "top_k", "top_p", "temperature", "more_smooth", "name"),
    "order": ("cfg", "multiscale", "kv_cache", "bogus"),
    "tokenizer": ("vocab_size", "channels", "image_size", "latent_dim", "name"),
    "bogus": ("x",),
}
VALUES = ("0", "-1", "1", "2", "3", "7", "99999999999999999999999", "1e-9", "1e30", "inf", "-inf", "nan", "0.5",
          "-0.0", "true", "false", '"abc"', "abc", "[1, 2]", "[0.9, 2.0]", "{a = 1}", '""', "[[1]]", "flex", "sdpa",
          "wsd", "lin0", "bf16", "cuda", "cpu", "1e308", "0x10", "'x'", "[", "=", "1.5")  # fmt: skip
# values a count or size option may take: invalid ones and small valid ones, never huge work
SMALL_INTS = ("0", "-1", "1", "2", "x", "1.5", "99999999999999999999999", "-99999999999")
FLOATS = ("0", "-1", "1e-3", "inf", "nan", "-inf", "1e30", "x", "1e-300")
SEEDS = ("0", "1", "-1", "18446744073709551616", "99999999999999999999999", "x", "2.5")


# -- files the cases feed in ----------------------------------------------------------------------


def _png(path: Path, side: int, body: bytes | None = None) -> None:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = body if body is not None else zlib.compress(b"\0" * (side + 1) * min(side, 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        op = rng.random()
        if op < 0.6 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op < 0.8 and b:
            del b[rng.randrange(len(b))]
        else:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
    if rng.random() < 0.3 and len(b) > 1:
        b = b[: rng.randrange(1, len(b))]
    return bytes(b)


def random_npz(path: Path, rng: random.Random) -> str:
    """A dataset file: a valid npz with odd contents, a damaged one, a .npy, or junk."""
    kind = rng.choice(("odd", "odd", "mutated", "npy", "junk", "lying", "float", "empty"))
    n = rng.choice((0, 1, 7, 16, 33))
    if kind == "odd":
        shape = rng.choice(((n, 16, 16), (n, 16, 16, 1), (n, 1, 16, 16), (n, 3, 16, 16), (n, 16, 8), (n,), (n, 16, 16, 5),
                            (n, 16, 16, 3), (n, 2, 16, 16)))  # fmt: skip
        dtype = rng.choice((np.uint8, np.uint8, np.int64, np.float32, np.bool_))
        arrays = {"images": np.zeros(shape, dtype=dtype) + (7 if dtype != np.bool_ else 0)}
        labels = rng.choice((None, "ok", "neg", "huge", "float", "short"))
        if labels == "ok":
            arrays["labels"] = np.arange(n) % 3
        elif labels == "neg":
            arrays["labels"] = -np.ones(n, dtype=np.int64)
        elif labels == "huge":
            arrays["labels"] = np.full(n, 10**9, dtype=np.int64)
        elif labels == "float":
            arrays["labels"] = np.zeros(n, dtype=np.float32)
        elif labels == "short":
            arrays["labels"] = np.zeros(max(n - 1, 0), dtype=np.int64)
        if rng.random() < 0.3:
            arrays["class_names"] = np.array(["a"] * rng.randint(0, 3))
        np.savez(path, **arrays)
    elif kind == "mutated":
        buf = io.BytesIO()
        np.savez(buf, images=np.zeros((n, 16, 16), np.uint8), labels=np.zeros(n, np.int64))
        path.write_bytes(_mutate(buf.getvalue(), rng))
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), np.zeros((4, 16, 16), np.uint8))
        path.with_suffix(".npy").rename(path)
    elif kind == "junk":
        path.write_bytes(rng.randbytes(rng.randint(0, 300)))
    elif kind == "lying":
        from numpy.lib import format as npy_format

        buf = io.BytesIO()
        npy_format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False,
                                                "shape": (rng.choice((10**9, 100, 2**40)), 16, 16)})  # fmt: skip
        buf.write(b"\0" * 512)
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("images.npy", buf.getvalue())
    elif kind == "float":
        np.savez(path, images=np.full((16, 16, 16), np.nan, np.float32))
    else:
        np.savez(path)
    return f"npz:{path.name}"


def random_imagefolder(root: Path, rng: random.Random) -> str:
    folder = root / "imgs"
    for k in range(rng.randint(0, 2)):
        (folder / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(rng.randint(0, 3)):
            p = folder / f"c{k}" / f"{i}.png"
            kind = rng.choice(("ok", "bomb", "big", "junk", "mutated", "zero"))
            if kind == "ok":
                _png(p, 16)
            elif kind == "bomb":
                _png(p, 30000, zlib.compress(b"\0" * 64))
            elif kind == "big":
                _png(p, 9000, zlib.compress(b"\0" * 64))
            elif kind == "zero":
                _png(p, 0, b"")
            elif kind == "junk":
                p.write_bytes(rng.randbytes(rng.randint(0, 100)))
            else:
                buf = io.BytesIO()
                _png(root / "tmp.png", 16)
                buf.write((root / "tmp.png").read_bytes())
                (root / "tmp.png").unlink()
                p.write_bytes(_mutate(buf.getvalue(), rng))
    folder.mkdir(exist_ok=True)
    return f"imagefolder:{folder.name}"


def random_toml(path: Path, rng: random.Random) -> None:
    kind = rng.choice(("sections", "sections", "binary", "scalar", "mutated"))
    if kind == "binary":
        path.write_bytes(rng.randbytes(rng.randint(1, 200)))
        return
    if kind == "scalar":
        path.write_text(f"{rng.choice(SECTIONS)} = {rng.choice(VALUES)}\n")
        return
    lines = []
    for _ in range(rng.randint(1, 3)):
        sec = rng.choice(SECTIONS)
        lines.append(f"[{sec}]")
        for _ in range(rng.randint(0, 3)):
            key = rng.choice(KEYS[sec]).split(".")[-1]
            lines.append(f"{key} = {rng.choice(VALUES)}")
    body = "\n".join(lines) + "\n"
    path.write_text(_mutate(body.encode(), rng).decode("latin-1") if kind == "mutated" else body)


def random_sets(rng: random.Random) -> list[str]:
    out = []
    for _ in range(rng.randint(0, 3)):
        sec = rng.choice(SECTIONS)
        key = rng.choice(KEYS[sec])
        form = rng.random()
        if form < 0.85:
            out += ["--set", f"{sec}.{key}={rng.choice(VALUES)}"]
        else:
            out += ["--set", rng.choice(("nodot=1", "a.=1", ".b=1", "train.budget=1", "x", "train..lr=1", "=1"))]
    return out


def random_pth(path: Path, rng: random.Random, official: dict[str, torch.Tensor] | None) -> None:
    """A state dict file: mutated bytes of a real one, a real one with odd tensors, or junk."""
    kind = rng.choice(("mutated", "odd", "odd", "junk", "nested"))
    base = dict(official or {"w": torch.zeros(2, 2)})
    if kind == "junk":
        path.write_bytes(rng.randbytes(rng.randint(0, 400)))
        return
    if kind == "nested":
        torch.save({"model": {"w": torch.zeros(1)}, 3: torch.zeros(1)} if rng.random() < 0.5 else [torch.zeros(1)], path)
        return
    if kind == "odd":
        for _ in range(rng.randint(1, 4)):
            if not base:
                break
            key = rng.choice(list(base))
            t = base[key]
            change = rng.choice(("rank", "empty", "dtype", "sparse", "nan", "drop", "extra", "zero-d"))
            if t.layout != torch.strided:  # made sparse by an earlier change: only drop it or leave it
                change = "drop" if change == "drop" else "extra"
            if change == "rank":
                base[key] = t.reshape(-1)
            elif change == "empty":
                base[key] = t.new_zeros((0,) * max(t.ndim, 1))
            elif change == "dtype":
                base[key] = t.to(rng.choice((torch.complex64, torch.int8, torch.bool, torch.float64)))
            elif change == "sparse" and t.ndim >= 1:
                base[key] = t.float().to_sparse()
            elif change == "nan" and t.is_floating_point():
                base[key] = torch.full_like(t, float("nan"))
            elif change == "drop":
                base.pop(key)
            elif change == "extra":
                base[f"extra.{rng.randrange(9)}"] = torch.zeros(rng.randint(0, 3))
            else:
                base[key] = torch.tensor(-3 if not t.is_floating_point() else 1.0, dtype=t.dtype)
        torch.save(base, path)
        return
    buf = io.BytesIO()
    torch.save({k: base[k] for k in list(base)[: rng.randint(1, 8)]}, buf)
    path.write_bytes(_mutate(buf.getvalue(), rng))


# -- one case -------------------------------------------------------------------------------------


def draw_case(seed: int, lab: Path, case: Path, official: tuple[dict, dict]) -> tuple[list[str], list[Path]]:
    """(argv, paths the command may write) for the case of `seed`; input files go into `case`."""
    rng = random.Random(seed)
    command = rng.choice(("train", "train", "train", "train-tokenizer", "sample", "eval", "bench", "import", "import",
                          "runs", "plugins", "reconstruct", "edit", "compare", "ablate", "scale", "check", "usage"))  # fmt: skip
    out = case / "out"

    def dataset() -> str:
        r = rng.random()
        if r < 0.45 or rng.random() > 3 * bad_rate + 0.2:
            return f"npz:{lab / 'tiny.npz'}"
        if r < 0.75:
            return "npz:" + str(case / random_npz(case / "d.npz", rng).split(":", 1)[1])
        if r < 0.85:
            return "imagefolder:" + str(case / random_imagefolder(case, rng).split(":", 1)[1])
        return rng.choice(("shapes", "nope", "npz:", "npz:/nonexistent.npz", "fashion-mnist:x", ":", "imagefolder:" + str(lab / "tiny.npz")))

    # how often a drawn value is a bad one: most cases are valid but for one or two things, so that
    # they get past option parsing into the library (a case with every option bad tests only Typer)
    bad_rate = rng.choice((0.0, 0.03, 0.08, 0.25))

    def pick(good: tuple[str, ...], bad: tuple[str, ...] = ()) -> str:
        return rng.choice(bad) if bad and rng.random() < bad_rate else rng.choice(good)

    def maybe(flag: str, pool: tuple[str, ...], p: float = 0.3, good: tuple[str, ...] = ()) -> list[str]:
        """`flag VALUE` with probability p; VALUE from `good` unless a bad one is drawn from `pool`."""
        if rng.random() >= p:
            return []
        return [flag, pick(good, pool) if good else rng.choice(pool)]

    def config() -> list[str]:
        if rng.random() < 0.35:
            random_toml(case / "c.toml", rng)
            return ["--config", str(case / "c.toml")]
        return []

    def run_dir() -> str:
        r = rng.random()
        if r < 0.7:
            return str(lab / "host")
        bad = case / "badrun"
        bad.mkdir(exist_ok=True)
        if r < 0.85:
            shutil.copy(lab / "host" / "model.json", bad / "model.json")
            text = (bad / "model.json").read_bytes()
            (bad / "model.json").write_bytes(_mutate(text, rng))
            for f in ("model.safetensors", "tokenizer.json", "tokenizer.safetensors"):
                if rng.random() < 0.7:
                    shutil.copy(lab / "host" / f, bad / f)
        return str(bad)

    writes = [out]
    if command == "train":
        argv = list(TRAIN)
        argv[argv.index("npz:tiny.npz")] = dataset()
        argv[argv.index("tok")] = rng.choice((str(lab / "tok"),) * 4 + (str(case / "missing"), str(lab / "tiny.npz")))
        argv += ["--steps", pick(("1", "1", "2"), ("0", "-1", "x"))]
        argv += maybe("--seed", SEEDS, good=("0", "1", "-1")) + maybe("--lr", FLOATS, good=("1e-3", "1e30"))
        argv += maybe("--batch-size", ("0", "-4", "x"), good=("8", "4"))
        argv += maybe("--depth", ("0", "65", "x"), good=("1",)) + maybe("--image-size", ("0", "-1", "17"), 0.1, ("16", "8"))
        argv += maybe("--device", ("cuda:7", "tpu"), 0.15, ("cpu", "auto")) + maybe("--threads", ("0", "-2"), 0.1, ("1",))
        argv += maybe("--checkpoint-every", ("0", "-1"), 0.15, ("1",)) + maybe("--cfg", FLOATS, 0.1, ("0", "1.5"))
        argv += config() + (random_sets(rng) if rng.random() < 0.3 + 2 * bad_rate else [])
        if rng.random() < 0.15:  # inside a run, or onto a file
            out = rng.choice((lab / "host" / "checkpoints" / "x", lab / "tiny.npz", lab / "host" / "sub"))
        argv += ["--out", str(out)] + (["--resume"] if rng.random() < 0.1 else [])
    elif command == "train-tokenizer":
        argv = ["train-tokenizer", "--tokenizer", rng.choice(("msvq-tiny", "msvq-tiny", "bogus", str(lab / "tok"))),
                "--dataset", dataset(), "--steps", pick(("1",), ("0", "-1", "x")), "--batch-size",
                pick(("8", "4"), ("0", "x")), "--out", str(out), "--set", "tokenizer.channels=1"]  # fmt: skip
        argv += maybe("--lr", FLOATS, good=("1e-3",)) + maybe("--seed", SEEDS, good=("0",))
        argv += maybe("--channels", ("0", "2"), 0.2, ("1",))
        argv += config() + [a.replace("backbone.", "tokenizer.").replace("order.", "train.") for a in random_sets(rng)]
    elif command == "sample":
        writes = [case / "s.png", case / "s.npz"]
        argv = ["sample", "--run", run_dir(), "--out", str(case / "s.png"), "--per-class", pick(("1", "2"), ("0", "-1", "x"))]
        argv += maybe("--seed", SEEDS, good=("0", "7")) + maybe("--cfg", FLOATS, good=("0", "2")) + maybe("--top-k", SMALL_INTS, good=("0", "3"))
        argv += maybe("--top-p", FLOATS, good=("0.5", "0")) + maybe("--temperature", FLOATS, good=("1", "0.5"))
        argv += maybe("--cfg-schedule", ("bogus",), good=("linear", "constant"))
        argv += maybe("--npz", (str(case / "s.npz"),), 0.2) + maybe("--tokenizer", (str(lab / "tok"), str(lab / "tiny.npz")), 0.15)
    elif command == "eval":
        argv = ["eval", "--run", run_dir(), "--n", pick(("4", "8"), ("0", "-1", "1", "x")), "--ref-n",
                pick(("8", "16"), ("0", "1", "x")), "--extractor", pick(("genorder-tiny-random",), ("bogus",)),
                "--no-floor", "--no-class-acc", "--cache-dir", str(out / "cache"), "--out", str(out / "eval.json")]  # fmt: skip
        argv += maybe("--seed", SEEDS, good=("0",)) + maybe("--batch-size", ("0", "-1"), good=("4",))
        argv += maybe("--bootstrap", ("-1",), 0.2, ("0", "2")) + maybe("--kid-subsets", ("0", "-1"), 0.2, ("1",))
        argv += maybe("--dataset", (dataset(),), 0.2)
    elif command == "bench":
        argv = ["bench", "--orders", rng.choice(("next-scale", "raster", "maskgit", "next-scale,bogus", "raster:cfg=2",
                                                 "next-scale:bogus=1", ",", "next-scale:kv_cache=x")),
                "--resolution", pick(("tiny",), ("64",)), "--depth", pick(("1",), ("0", "x")),
                "--batch-sizes", pick(("1", "1,2"), ("0", "-1", "x,1", "")), "--repeats", pick(("1",), ("0",)),
                "--warmup", pick(("0",), ("-1",)), "--json", str(out / "b.json")]  # fmt: skip
        argv += maybe("--top-k", SMALL_INTS, 0.2) + maybe("--top-p", FLOATS, 0.2) + maybe("--cfg-scale", FLOATS, 0.2)
        argv += maybe("--dtype", ("fp32", "bf16", "fp8"), 0.2) + maybe("--baseline", ("raster", "nope"), 0.2)
    elif command == "import":
        vae, var = official
        for name, state in (("vae", vae), ("var", var)):
            random_pth(case / f"{name}.pth", rng, state if rng.random() < 0.8 else None) if rng.random() < 0.7 else torch.save(state, case / f"{name}.pth")
        argv = ["import", rng.choice(("var",) * 6 + ("bogus",)), "--vae", str(case / "vae.pth"), "--var",
                str(case / "var.pth"), "--out", str(out)]  # fmt: skip
        argv += maybe("--heads", ("1", "2", "0", "-1", "3"), 0.2) + maybe("--set", ("importer.quant_resi=2", "importer.quant_resi=nan", "x.y=1"), 0.2)
    elif command == "runs":
        argv = ["runs", rng.choice((str(lab / "host"), run_dir(), str(case / "nothing"), str(lab / "tiny.npz")))]
        writes = []
    elif command == "plugins":
        argv, writes = ["plugins"], []
    elif command == "reconstruct":
        argv = ["reconstruct", "--tokenizer-ckpt", rng.choice((str(lab / "tok" / "tokenizer"), str(lab / "tiny.npz"), str(case / "x"))),
                "--dataset", dataset(), "--n", pick(("4",), ("0", "-1", "x")), "--out", str(case / "r.png")]  # fmt: skip
        writes = [case / "r.png"]
    elif command == "edit":
        argv = ["edit", "--run", run_dir(), "--mask", rng.choice(("center", "left", "bogus", str(lab / "tiny.npz"), "")),
                "--n", pick(("2",), ("0", "-1", "x")), "--no-fid", "--out", str(out),
                *([] if rng.random() < 0.2 else ["--dataset", dataset()])]  # fmt: skip
        argv += maybe("--seeds", ("x", "-1"), 0.3, ("0", "0,1")) + maybe("--class", ("-1", "99", "x"), 0.3, ("0", "1"))
    elif command in ("compare", "ablate", "scale"):  # parsing and validation only: each case is bad input
        argv = [command, "--out", str(out)]
        # each of these is checked to be an error for all three (`--orders ,,` is not: it means the default
        # orders and starts a real sweep)
        argv += rng.choice((["--bogus"], ["--steps", "x"], ["--seeds", "x,y"], ["--orders", "no-such-order"],
                            ["--config", str(lab / "tiny.npz")], ["--set", "x"], ["--points", "-1"], ["--n", "-1"],
                            ["--workers", "0"]))  # fmt: skip
    elif command == "check":
        argv, writes = ["check", *rng.choice((["--bogus"], ["--threads", "x"]))], []
    else:  # usage errors anywhere
        argv = [rng.choice(("train", "sample", "eval", "bench", "nope", "import")), *rng.choice((["--bogus"], ["--seed"], ["-x"], ["--set"]))]
        writes = []
    return argv, writes


def run_case(seed: int, lab: Path, official: tuple[dict, dict]) -> str | None:
    """Run the case of `seed`; None when it held, else what went wrong (with the argv)."""
    case = lab / "cases" / f"c{seed}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    argv, writes = draw_case(seed, lab, case, official)
    caches = (lab / "cache", lab / "cases", *(lab / "runs" / c for c in CACHES))
    before = snapshot(lab, skip=(*writes, *caches))
    case_before = snapshot(case, skip=tuple(writes))
    threads = torch.get_num_threads()
    try:
        r = invoke(lab, *argv)
    finally:
        torch.set_num_threads(threads)
    problems = []
    tb = traceback_of(r)
    if tb is not None:
        problems.append(f"traceback:\n{tb}")
    elif r.exit_code not in (0, 2):
        problems.append(f"exit {r.exit_code}")
    elif r.exit_code == 2 and "error:" not in r.output:
        problems.append("exit 2 without an error: line")
    if "Traceback" in r.output:
        problems.append("a traceback in the output")
    if snapshot(lab, skip=(*writes, *caches)) != before or snapshot(case, skip=tuple(writes)) != case_before:
        problems.append("files outside the command's outputs changed")
    shutil.rmtree(case, ignore_errors=True)
    if problems:
        return f"seed {seed}: genorder {' '.join(argv)}\n" + "\n".join(problems) + f"\n--- output\n{r.output[-2000:]}"
    return None


@pytest.fixture(scope="module")
def fuzz_lab(tmp_path_factory):
    """The lab, a 1-step run to sample from, the official-format tensors, and the caches redirected."""
    root = make_lab(tmp_path_factory.mktemp("fuzz"))
    r = invoke(root, *TRAIN, "--steps", "1", "--out", "host")
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    s = load_file(str(Path(__file__).parent / "data" / "var_official_small.safetensors"))
    official = ({k[4:]: v for k, v in s.items() if k.startswith("vae.")},
                {k[6:]: v for k, v in s.items() if k.startswith("var_a.")})  # fmt: skip
    return root, official


@pytest.fixture
def _isolated(fuzz_lab, monkeypatch):
    root, _ = fuzz_lab
    monkeypatch.setenv("GENORDER_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("HOME", str(root / "cache" / "home"))  # any ~ cache lands in the lab's cache folder
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_the_harness_catches_tracebacks_bad_exits_and_stray_writes(fuzz_lab, _isolated, monkeypatch):
    """The checks can fail: a command that raises, exits 1, or writes beside its --out is reported."""
    import test_fuzz

    root, official = fuzz_lab
    real = test_fuzz.invoke

    class Crashed:  # what CliRunner returns for a command that raised
        exception, exit_code, output = RuntimeError("boom"), 1, "Traceback (most recent call last)"

    def raising(lab, *argv):
        return Crashed()

    def stray(lab, *argv):
        (lab / "stray.txt").write_text("x")
        return real(lab, "plugins")

    monkeypatch.setattr(test_fuzz, "invoke", raising)
    assert "traceback" in run_case(5, root, official)
    monkeypatch.setattr(test_fuzz, "invoke", stray)
    try:
        assert "files outside the command's outputs changed" in run_case(5, root, official)
    finally:
        (root / "stray.txt").unlink()


def _run(seeds, fuzz_lab, log: Path | None = None) -> tuple[int, list[str]]:
    """Run every seed's case; with `log`, one JSON line per case as it finishes (a long run that is
    stopped early still says how many cases it ran and what failed)."""
    root, official = fuzz_lab
    failures, n = [], 0
    for seed in seeds:
        bad = run_case(seed, root, official)
        n += 1
        if bad:
            failures.append(bad)
        if log is not None:
            with log.open("a") as f:
                f.write(json.dumps({"seed": seed, "ok": bad is None, **({"failure": bad} if bad else {})}) + "\n")
    return n, failures


def test_fuzz_ci(fuzz_lab, _isolated):
    """CI_CASES seeded cases: 0 tracebacks, exit 0 or 2, nothing written outside the outputs."""
    n, failures = _run(range(CI_CASES), fuzz_lab)
    assert n == CI_CASES
    assert not failures, f"{len(failures)} of {n} cases failed:\n\n" + "\n\n".join(failures[:5])


def test_fuzz_seeds(fuzz_lab, _isolated):
    """The cases named by GENORDER_FUZZ_SEEDS (comma-separated; default: a few past the CI range)."""
    seeds = [int(s) for s in os.environ.get("GENORDER_FUZZ_SEEDS", "100000,100001,100002").split(",")]
    _, failures = _run(seeds, fuzz_lab)
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.long
def test_fuzz_long(fuzz_lab, _isolated):
    """GENORDER_FUZZ_CASES (default 1,000) seeded cases after the CI ones; the report lists every failure."""
    report = Path(os.environ.get("GENORDER_FUZZ_REPORT", fuzz_lab[0] / "fuzz-report.jsonl"))
    first = CI_CASES + int(os.environ.get("GENORDER_FUZZ_START", "0"))  # resume a stopped run's seeds
    n, failures = _run(range(first, first + LONG_CASES), fuzz_lab, log=report)
    assert n == LONG_CASES
    assert not failures, f"{len(failures)} of {n} cases failed (report {report}):\n\n" + "\n\n".join(failures[:5])
