"""Issue 24, items 5-8 (datasets), 10-12: a broken plugin hurts only itself, a failing order is
one `error:` line naming it, non-finite data is refused, and the listed crashes and validation gaps
are `error:` + exit 2 with nothing written. Every case runs the Typer app in this process.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from robust_fixtures import TRAIN, assert_clean_error, invoke, make_lab, snapshot, text, traceback_of

import genorder_cli.app as cli_app
from genorder.data import ImageDataset, load_dataset
from genorder.errors import UserError
from genorder.registry import Entry, registry, reset
from genorder_plugins.next_scale import NextScale


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return make_lab(tmp_path_factory.mktemp("robust"))


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- 5, 6: a broken plugin hurts only itself -------------------------------------------------------

PLUGINS = {
    "rb_exit_plugin": "import sys\nsys.exit(3)\n",
    "rb_base_plugin": "class Weird(BaseException):\n    pass\n\nraise Weird('weird at import')\n",
    "rb_bad_names": (
        "from genorder import hookimpl\n"
        "from genorder_plugins.next_scale import NextScale\n\n"
        "class Fine(NextScale):\n    '''A fine order next to broken registrations.'''\n\n"
        "@hookimpl\n"
        "def register_orders(register):\n"
        "    register(None, Fine)\n"
        "    register('not-a-class', 42)\n"
        "    register('rb-fine', Fine)\n"
    ),
    "rb_hook_exit": (
        "import sys\nfrom genorder import hookimpl\n\n"
        "@hookimpl\n"
        "def register_samplers(register):\n"
        "    sys.exit('bye from a hook')\n"
    ),
}


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    for name, source in PLUGINS.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    fakes = [importlib.metadata.EntryPoint(name, name, "genorder") for name in PLUGINS]

    def entry_points(**kw):
        eps = real(**kw)
        return [*eps, *fakes] if kw.get("group") == "genorder" else eps

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(cli_app, "_warned", False)
    reset()
    yield tmp_path
    monkeypatch.undo()
    for name in PLUGINS:
        sys.modules.pop(name, None)
    reset()


def test_sys_exit_base_exceptions_bad_names_and_non_classes_hurt_only_their_plugin(broken_plugins):
    r = invoke(broken_plugins, "plugins")
    assert traceback_of(r) is None and r.exit_code == 0, r.output
    t = text(r)
    assert "warning: plugin rb_exit_plugin (?) failed to load" in t and "SystemExit: 3" in t
    assert "warning: plugin rb_base_plugin (?) failed to load" in t and "Weird: weird at import" in t
    assert "register_samplers raised SystemExit: bye from a hook" in t
    assert "order name None is not a valid name" in t
    assert "order 'not-a-class' is registered as int 42, not a class" in t
    # every other component is still there, the bad plugin's valid order included
    assert {"next-scale", "raster", "maskgit", "rb-fine"} <= set(registry("orders").names())
    assert "standard" in registry("samplers").names()
    assert "rb-fine" in t and "next-scale" in t
    # and other commands work: an error of their own, not the plugin's
    r = invoke(broken_plugins, "runs", "nowhere")
    assert_clean_error(r, "no runs under nowhere")


def test_ctrl_c_in_a_plugin_import_is_not_swallowed(tmp_path, monkeypatch):
    from genorder.registry import load_entry_points, make_plugin_manager

    (tmp_path / "rb_ctrl_c.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [importlib.metadata.EntryPoint("rb_ctrl_c", "rb_ctrl_c", "genorder")])  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        load_entry_points(make_plugin_manager(load_entrypoints=False), [])
    sys.modules.pop("rb_ctrl_c", None)


# -- 7: an order whose generate() raises -----------------------------------------------------------


class Boom(NextScale):
    """next-scale whose generate() raises (a plugin's bug)."""

    def generate(self, *args, **kwargs):
        raise RuntimeError("boom in generate")


@pytest.fixture
def boom(monkeypatch, tmp_path):
    monkeypatch.setitem(registry("orders").entries, "boom", Entry("boom", Boom, "boom_plugin"))
    monkeypatch.setenv("GENORDER_CACHE_DIR", str(tmp_path / "cache"))  # bench's device-floor cache


def test_failing_generate_is_one_error_line_in_train_sample_eval_and_bench(lab, boom):
    run = lab / "boom-run"
    r = invoke(lab, *[a if a != "next-scale" else "boom" for a in TRAIN], "--steps", "2", "--out", run)
    assert_clean_error(r, "order 'boom' (plugin boom_plugin)", "boom in generate", "saved")
    summary = json.loads((run / "summary.json").read_text())  # the run is not lost
    assert summary["spent"]["steps"] == 2 and "boom in generate" in summary["sample_grid_error"]
    assert not (run / "samples.png").exists()
    before = snapshot(run)
    r = invoke(lab, *[a if a != "next-scale" else "boom" for a in TRAIN], "--steps", "2", "--out", run, "--resume")
    assert traceback_of(r) is None and r.exit_code == 0, r.output
    assert "already complete" in text(r) and "sample grid failed" in text(r) and "boom in generate" in text(r)
    assert snapshot(run) == before  # the crash is not repeated, nothing is retrained
    assert_clean_error(invoke(lab, "sample", "--run", run), "order 'boom' (plugin boom_plugin)")
    r = invoke(lab, "eval", "--run", run, "--n", "8", "--ref-n", "16", "--extractor", "genorder-tiny-random",
               "--no-floor", "--no-class-acc", "--cache-dir", lab / "evalcache")  # fmt: skip
    assert_clean_error(r, "order 'boom' (plugin boom_plugin)")
    out = lab / "bench" / "b.json"
    r = invoke(lab, "bench", "--orders", "next-scale,boom", "--resolution", "tiny", "--depth", "1", "--batch-sizes",
               "1", "--repeats", "1", "--warmup", "0", "--json", out)  # fmt: skip
    assert_clean_error(r, "order 'boom' (plugin boom_plugin)", "boom in generate")
    rows = {row["order"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["next-scale"]["latency_s"] > 0 and not rows["next-scale"]["failed"]  # kept and written
    assert rows["boom"]["failed"] and rows["boom"]["latency_s"] is None
    assert out.with_suffix(".png").is_file()


def test_library_sample_grid_returns_the_failure_and_writes_nothing(lab, boom, tmp_path):
    from genorder.runs import Run
    from genorder.sample_grid import write_sample_grid
    from genorder.sampler import StandardSampler

    model = torch.nn.Linear(1, 1)
    run = Run(tmp_path, Boom(Boom.Config()), "boom", None, model, {})
    err = write_sample_grid(run, ["a", "b"], StandardSampler(StandardSampler.Config()), 0, 2, tmp_path / "g.png")
    assert err is not None and "boom_plugin" in err and not (tmp_path / "g.png").exists()


# -- 8: non-finite pixels -----------------------------------------------------------------------


class NanImages(torch.utils.data.Dataset):
    """A plugin dataset yielding float images, one of them NaN."""

    Config = ImageDataset.Config

    def __init__(self, config) -> None:
        self.images = torch.zeros(20, 1, 16, 16)
        self.images[13, 0, 2, 2] = float("nan") if config.arg != "inf" else float("inf")
        self.num_classes, self.channels, self.image_size, self.class_names = 2, 1, 16, ["a", "b"]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 2


class FloatInSetData(ImageDataset):
    """An ImageDataset subclass handing _set_data float images."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self._set_data(torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long), ["a"])


def test_datasets_with_non_finite_pixels_are_refused(lab, monkeypatch):
    monkeypatch.setitem(registry("datasets").entries, "nanset", Entry("nanset", NanImages, "nan_plugin"))
    monkeypatch.setitem(registry("datasets").entries, "floatset", Entry("floatset", FloatInSetData, "nan_plugin"))
    for spec in ("nanset", "nanset:inf"):
        with pytest.raises(UserError, match="image 13 holds non-finite pixels"):
            load_dataset(spec)
    with pytest.raises(UserError, match="images must be a uint8 tensor"):
        load_dataset("floatset")
    r = invoke(lab, *TRAIN, "--dataset", "nanset", "--steps", "1", "--out", "nan-run")
    assert_clean_error(r, "non-finite pixels")
    assert not (lab / "nan-run").exists()
    assert len(load_dataset("npz:" + str(lab / "tiny.npz"))) == 64  # a finite dataset still loads


# -- 10, 11: tracebacks and validation gaps in train -----------------------------------------------


def _png_header_only(path: Path, side: int) -> None:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _lying_npz(path: Path, shape: tuple[int, ...]) -> None:
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    buf.write(b"\0" * 1024)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images.npy", buf.getvalue())


def test_bad_settings_and_bad_files_are_errors_with_nothing_written(lab):
    (lab / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (lab / "neg_lr.toml").write_text("[train]\nlr = -1.0\n")
    (lab / "bomb" / "a").mkdir(parents=True)
    _png_header_only(lab / "bomb" / "a" / "big.png", 30000)
    (lab / "mid" / "a").mkdir(parents=True)
    _png_header_only(lab / "mid" / "a" / "big.png", 8000)  # under PIL's limits, over ours
    np.save(lab / "arr.npy", np.zeros((4, 16, 16), np.uint8))
    _lying_npz(lab / "lies.npz", (800_000_000, 16, 16))
    base = [*TRAIN, "--steps", "1"]
    cases = [
        (["--seed", "99999999999999999999999"], "train.seed"),
        (["--config", "binary.toml"], "not UTF-8"),
        (["--set", "backbone.width=9", "--set", "backbone.heads=2"], "width 9 must be divisible by heads 2"),
        (["--set", "backbone.heads=1000"], "divisible by heads 1000"),
        (["--set", "backbone.attn_backend=flex", "--device", "cpu"], "flex needs a CUDA device"),
        (["--set", "train.lr=inf"], "train.lr: Input should be a finite number"),
        (["--set", "sampler.cfg=nan"], "sampler.cfg"),
        (["--set", "backbone.mlp_ratio=1e-9"], "feed-forward width of 0"),
        (["--set", "train.lr=-1", "--lr", "0.1"], "train.lr: Input should be greater than 0"),
        (["--config", "neg_lr.toml", "--lr", "0.1"], "a later option overrides"),
        (["--set", "train.batch_size=0", "--batch-size", "8"], "train.batch_size"),
    ]
    for spec, message in (("imagefolder:bomb", "too large to decode"), ("imagefolder:mid", "8000x8000"),
                          ("npz:arr.npy", "single .npy array"), ("npz:lies.npz", "declares shape (800000000, 16, 16)")):  # fmt: skip
        cases.append((["--dataset", spec], message))  # the last --dataset counts
    for extra, message in cases:
        args = list(base)
        before = snapshot(lab)
        r = invoke(lab, *args, *extra, "--out", "bad")
        assert_clean_error(r, message)
        assert not (lab / "bad").exists(), extra
        assert snapshot(lab) == before, extra


def test_out_inside_another_run_is_refused(lab):
    r = invoke(lab, *TRAIN, "--steps", "1", "--out", "host")
    assert r.exit_code == 0, r.output
    before = snapshot(lab / "host")
    for inner in ("host/checkpoints", "host/checkpoints/x", "host/sub"):
        assert_clean_error(invoke(lab, *TRAIN, "--steps", "1", "--out", inner), "is inside the run")
    assert snapshot(lab / "host") == before


def test_huge_sampling_seed_is_an_error(lab):
    if not (lab / "host" / "model.json").exists():
        assert invoke(lab, *TRAIN, "--steps", "1", "--out", "host").exit_code == 0
    assert_clean_error(invoke(lab, "sample", "--run", "host", "--seed", str(2**70), "--out", "s.png"), "out of range")
    assert not (lab / "s.png").exists()
    r = invoke(lab, "train-tokenizer", "--tokenizer", "msvq-tiny", "--dataset", "npz:tiny.npz", "--steps", "1",
               "--seed", "99999999999999999999999", "--out", "tk-seed")  # fmt: skip
    assert_clean_error(r, "train.seed")
    assert not (lab / "tk-seed").exists()


# -- 12: the error formatter and usage errors -------------------------------------------------------


def test_bracketed_text_survives_and_usage_errors_are_error_lines(lab):
    r = invoke(lab, *TRAIN, "--set", "bogus.x=1", "--out", "o")
    assert_clean_error(r, "this command reads [order], [backbone], [train], [budget], [sampler], [tokenizer]")
    for args, needle in ((["train", "--order", "raster", "--bogus"], "No such option: --bogus"),
                         (["train", "--order", "raster", "--depth", "x"], "Invalid value for '--depth'"),
                         (["train"], "Missing option '--order'"), (["no-such-command"], "No such command")):  # fmt: skip
        r = invoke(lab, *args)
        assert_clean_error(r, needle, "--help")
        assert "╭" not in r.output  # not Typer's box
    r = invoke(lab, "plugins", "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_markup_in_a_plugin_error_is_printed_as_written(lab, monkeypatch):
    class Loud(Boom):
        def generate(self, *args, **kwargs):
            raise RuntimeError("[bold]not markup[/bold] and [red]")

    monkeypatch.setitem(registry("orders").entries, "loud", Entry("loud", Loud, "loud_plugin"))
    if not (lab / "host" / "model.json").exists():
        assert invoke(lab, *TRAIN, "--steps", "1", "--out", "host").exit_code == 0
    from genorder.runs import load_run
    from genorder.sampling import generate_images
    from genorder.sampler import StandardSampler

    run = load_run(lab / "host")
    run.order, run.order_name = Loud(Loud.Config()), "loud"
    with pytest.raises(UserError) as err:
        generate_images(run, torch.zeros(2, dtype=torch.long), StandardSampler(StandardSampler.Config()))
    cli_app_out = io.StringIO()
    from rich.console import Console

    monkeypatch.setattr(cli_app, "err_console", Console(file=cli_app_out, width=300))
    cli_app._print_error(str(err.value))
    assert "[bold]not markup[/bold] and [red]" in cli_app_out.getvalue()


# -- 10, 11: import var with malformed tensors --------------------------------------------------

FIXTURE = Path(__file__).parent / "data" / "var_official_small.safetensors"


@pytest.fixture(scope="module")
def official():
    from safetensors.torch import load_file

    s = load_file(str(FIXTURE))
    return ({k[4:]: v for k, v in s.items() if k.startswith("vae.")},
            {k[6:]: v for k, v in s.items() if k.startswith("var_a.")})  # fmt: skip


def _malformed(vae, var):
    lvl = var["lvl_1L"]
    return {
        "1-D class_emb": ({}, {"class_emb.weight": torch.zeros(128)}, "class_emb.weight has shape (128,)"),
        "1-row class_emb": ({}, {"class_emb.weight": torch.zeros(1, 128)}, "class_emb has 1 row"),
        "1-D conv_in": ({"encoder.conv_in.weight": torch.zeros(32)}, {}, "encoder.conv_in.weight has shape (32,)"),
        "0-channel conv_in": ({"encoder.conv_in.weight": torch.zeros(32, 0, 3, 3)}, {}, "at least (1, 1, 1, 1)"),
        "1-D embedding": ({"quantize.embedding.weight": torch.zeros(512)}, {}, "quantize.embedding.weight"),
        "0-D fc1": ({}, {"blocks.0.ffn.fc1.weight": torch.tensor(1.0)}, "fc1.weight has shape () (0-D)"),
        "negative lvl_1L": ({}, {"lvl_1L": -lvl}, "negative levels"),
        "empty lvl_1L": ({}, {"lvl_1L": lvl[:, :0]}, "lvl_1L is empty"),
        "float lvl_1L": ({}, {"lvl_1L": lvl.float() + 0.5}, "expected integers"),
        "sparse head": ({}, {"head.weight": var["head.weight"].to_sparse()}, "sparse_coo tensor"),
        "complex head": ({}, {"head.weight": var["head.weight"].to(torch.complex64)}, "never cast"),
        "NaN class_emb": ({}, {"class_emb.weight": torch.full((11, 128), float("nan"))}, "non-finite"),
        "0-D scale_mul": ({}, {"blocks.0.attn.scale_mul_1H11": torch.tensor(1.0)}, "scale_mul_1H11"),
    }


def test_import_var_with_malformed_tensors_is_an_error_before_writing(official, tmp_path):
    vae, var = official
    for name, (dv, dr, message) in _malformed(vae, var).items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        torch.save({**vae, **dv}, d / "vae.pth")
        torch.save({**var, **dr}, d / "var.pth")
        r = invoke(d, "import", "var", "--vae", "vae.pth", "--var", "var.pth", "--out", "run")
        assert_clean_error(r, message)
        assert not (d / "run").exists(), name


def test_fuzzed_pth_files_are_errors(tmp_path, official):
    import random

    vae, _ = official
    good = io.BytesIO()
    torch.save({k: vae[k] for k in list(vae)[:6]}, good)
    raw = good.getvalue()
    rng = random.Random(24)
    for i in range(40):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if i % 4 == 0:
            data = data[: rng.randrange(1, len(data))]
        (tmp_path / "f.pth").write_bytes(bytes(data))
        from genorder.importers import read_state_dict

        try:
            read_state_dict(tmp_path / "f.pth")
        except UserError as err:
            assert str(err).startswith(str(tmp_path / "f.pth"))
