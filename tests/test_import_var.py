"""`genorder import var` against the official VAR code's own numbers.

The fixture `tests/data/var_official_small.safetensors` (see /shared/fixtures/README.md, copied here)
holds a 128 px / 5-scale VQVAE and two d2 VAR models in the official parameter names, with what the
official code computed from them: token indices, teacher-forcing inputs, the reconstruction,
teacher-forced logits and the greedy (top-1) CFG-1.5 samples. The runs below are written by the CLI
and read back with `load_run`, so the whole path (official names -> genorder run directory -> model)
is what is compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import one_thread
from safetensors.torch import load_file
from typer.testing import CliRunner

from genorder.generation import make_generator
from genorder.importers import read_state_dict
from genorder.registry import registry
from genorder.runs import load_run
from genorder_cli.main import app

FIXTURE = Path(__file__).parent / "data" / "var_official_small.safetensors"
MODELS = ("var_a", "var_b")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imported")
    out = {}
    with one_thread():
        for name in MODELS:
            r = invoke("import", "var", "--vae", FIXTURE, "--vae-prefix", "vae.", "--var", FIXTURE,
                       "--var-prefix", f"{name}.", "--out", root / name)  # fmt: skip
            assert r.exit_code == 0, r.output
            out[name] = root / name
    return out


def test_run_directory_is_genorder_format_with_the_architecture_read_from_the_tensors(runs):
    for name, flags in (("var_a", (False, True)), ("var_b", (True, False))):
        meta = json.loads((runs[name] / "model.json").read_text())
        bb = meta["backbone"]
        assert (bb["depth"], bb["width"], bb["heads"], bb["mlp_ratio"]) == (2, 128, 2, 4.0)
        assert (bb["shared_adaln"], bb["qk_norm"]) == flags
        assert meta["order"]["name"] == "next-scale" and meta["num_classes"] == 10
        assert meta["imported"]["importer"] == "var" and meta["layout"] == [1, 2, 4, 6, 8]
        tok = json.loads((runs[name] / "tokenizer.json").read_text())["config"]
        assert tok["image_size"] == 128 and tok["scales"] == [1, 2, 4, 6, 8] and tok["vocab_size"] == 512
        assert tok["latent_dim"] == 16 and tok["ch"] == 32 and tok["ch_mult"] == [1, 1, 2, 2, 4]
        assert tok["phi_share"] == 4 and tok["quant_resi"] == 0.5
        assert not list(runs[name].glob("*.pth")) and (runs[name] / "model.safetensors").is_file()


def test_tokens_inputs_and_reconstruction_match_the_official_vqvae(runs, ref):
    run = load_run(runs["var_a"])
    with one_thread(), torch.no_grad():
        idx = run.tokenizer.encode(ref["input.img"])
        for k, t in enumerate(idx):
            assert torch.equal(t, ref[f"output.idx.{k}"]), f"scale {k}"
        gt = [ref[f"output.idx.{k}"] for k in range(5)]
        x_in = run.tokenizer.latent_inputs(gt)
        recon = run.tokenizer.decode(gt)
    torch.testing.assert_close(x_in, ref["output.x_in"], atol=1e-5, rtol=0)
    torch.testing.assert_close(recon, ref["output.recon"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_teacher_forced_logits_match_the_official_var(runs, ref, name):
    run = load_run(runs[name])
    with one_thread(), torch.no_grad():
        gt = [ref[f"output.idx.{k}"] for k in range(5)]
        batch = run.order.training_batch(gt, run.tokenizer, None)
        logits = run.model(batch.inputs, ref["input.labels"])
    torch.testing.assert_close(batch.inputs, ref["output.x_in"], atol=1e-5, rtol=0)
    assert logits.shape == (2, 121, 512)
    torch.testing.assert_close(logits, ref[f"output.{name}.logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_cfg_samples_match_the_official_var(runs, ref, name):
    run = load_run(runs[name])
    sampler = registry("samplers").create("standard", {"cfg": 1.5, "top_k": 1, "cfg_schedule": "linear"})
    with one_thread(), torch.no_grad():
        tokens = run.order.generate(run.model, run.tokenizer, ref["input.labels"], sampler, make_generator(0, "cpu"))
        img01 = (run.tokenizer.decode(tokens) + 1) / 2
    torch.testing.assert_close(img01, ref[f"output.{name}.greedy_cfg1.5_img01"], atol=1e-4, rtol=0)


def test_imported_run_samples_through_the_cli(runs, tmp_path):
    with one_thread():
        r = invoke("sample", "--run", runs["var_b"], "--per-class", "1", "--top-k", "1", "--out", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    from PIL import Image

    w, h = Image.open(tmp_path / "s.png").size
    assert h > 10 * 128 and w > 128  # one row per class (10), 128 px images


def test_imported_run_evaluates_and_benches_through_the_cli(runs, tmp_path, monkeypatch):
    """An imported run knows no dataset of its own: `eval` takes the reference set from --dataset."""
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "fid"))
    monkeypatch.chdir(tmp_path)
    with one_thread():
        r = invoke("eval", "--run", runs["var_a"], "--dataset", "shapes", "--n", "4", "--ref-n", "16", "--batch-size", "4",
                   "--extractor", "genorder-tiny-random", "--kid-subsets", "2", "--out", tmp_path / "ev.json")  # fmt: skip
        assert r.exit_code == 0, r.output
        rec = json.loads((tmp_path / "ev.json").read_text())
        assert rec["order"] == "next-scale" and rec["dataset"] == "shapes" and rec["metrics"]["fid"] >= 0
        r = invoke("bench", "--run", runs["var_a"], "--batch-sizes", "1", "--warmup", "1", "--repeats", "1",
                   "--json", tmp_path / "bench.json")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "next-scale" in (tmp_path / "bench.json").read_text()


# -- bad input: error line, exit code 2, nothing written ---------------------------------------------


@pytest.fixture(scope="module")
def states(ref) -> tuple[dict, dict]:
    vae = {k[4:]: v for k, v in ref.items() if k.startswith("vae.")}
    var = {k[6:]: v for k, v in ref.items() if k.startswith("var_a.")}
    return vae, var


def _import(tmp_path: Path, vae: Path, var: Path):
    with one_thread():
        return invoke("import", "var", "--vae", vae, "--var", var, "--out", tmp_path / "out")


def _bad(tmp_path: Path, r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert "error:" in r.output
    for n in needles:
        assert n in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_plain_pth_files_import(tmp_path, states, ref):
    vae, var = states
    torch.save(vae, tmp_path / "vae.pth")
    torch.save(var, tmp_path / "var.pth")
    r = _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth")
    assert r.exit_code == 0, r.output
    run = load_run(tmp_path / "out")
    with torch.no_grad():
        logits = run.model(ref["output.x_in"], ref["input.labels"])
    torch.testing.assert_close(logits, ref["output.var_a.logits"], atol=1e-5, rtol=0)


def test_extra_key_is_refused(tmp_path, states):
    vae, var = states
    torch.save(vae, tmp_path / "vae.pth")
    torch.save({**var, "blocks.0.attn.surprise": torch.zeros(3)}, tmp_path / "var.pth")
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "unexpected key", "blocks.0.attn.surprise")


def test_missing_key_is_refused(tmp_path, states):
    vae, var = states
    torch.save({k: v for k, v in vae.items() if k != "decoder.conv_out.bias"}, tmp_path / "vae.pth")
    torch.save(var, tmp_path / "var.pth")
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "missing key", "decoder.conv_out.bias")
    torch.save(vae, tmp_path / "vae.pth")
    torch.save({k: v for k, v in var.items() if k != "head_nm.ada_lin.1.bias"}, tmp_path / "var.pth")
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "missing key", "head_nm.ada_lin.1.bias")


def test_wrong_shape_is_refused(tmp_path, states):
    vae, var = states
    torch.save(vae, tmp_path / "vae.pth")
    torch.save({**var, "blocks.1.ffn.fc2.bias": torch.zeros(129)}, tmp_path / "var.pth")
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "blocks.1.ffn.fc2.bias", "(129,)", "(128,)")


class NotATensor:
    def __init__(self) -> None:
        self.payload = "anything a full unpickle would run"


def test_pickle_with_a_non_tensor_object_is_refused(tmp_path, states):
    vae, var = states
    torch.save(vae, tmp_path / "vae.pth")
    torch.save({**var, "obj": NotATensor()}, tmp_path / "var.pth")  # weights_only refuses the class
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "not a plain state dict", "weights_only")
    torch.save({**var, "note": "trained by X"}, tmp_path / "var.pth")  # loads, but is not a tensor
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "'note' holds a str")
    torch.save({"model": var}, tmp_path / "var.pth")  # a wrapped state dict
    _bad(tmp_path, _import(tmp_path, tmp_path / "vae.pth", tmp_path / "var.pth"), "nested dict")


def test_read_state_dict_prefix_keeps_only_that_model(tmp_path):
    state = read_state_dict(FIXTURE, "var_b.")
    assert "shared_ada_lin.1.weight" in state and not any(k.startswith(("vae.", "var_a.", "output.")) for k in state)
    with pytest.raises(Exception, match="no tensor name starts with"):
        read_state_dict(FIXTURE, "nope.")
